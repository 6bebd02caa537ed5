/*
 * aims_export.h -- symbol export control for libaims.
 *
 * Every public declaration carries AIMS_API. The library is built with
 * -fvisibility=hidden, so only AIMS_API symbols (and only those named in
 * src/libaims.map) leave the shared object. Hosts linking a static build define
 * AIMS_STATIC before including any libaims header.
 */
/** @file */
/**
 * @def AIMS_DEPRECATED(msg)
 * @brief Marks a declaration deprecated (a compiler warning quoting @p msg);
 * empty when AIMS_DISABLE_DEPRECATE_WARNINGS is defined.
 * @def AIMS_EXTERN_C_BEGIN
 * @brief Opens an extern "C" block in C++ (empty in C).
 * @def AIMS_EXTERN_C_END
 * @brief Closes the block AIMS_EXTERN_C_BEGIN opened.
 */
#ifndef AIMS_EXPORT_H
#define AIMS_EXPORT_H

#ifndef AIMS_API
#  if defined(AIMS_STATIC)
#    define AIMS_API
#  elif defined(_WIN32)
#    if defined(AIMS_BUILDING_DLL)
#      define AIMS_API __declspec(dllexport)
#    else
#      define AIMS_API __declspec(dllimport)
#    endif
#  elif defined(__GNUC__) && __GNUC__ >= 4
#    define AIMS_API __attribute__((visibility("default")))
#  else
#    define AIMS_API
#  endif
#endif

#ifndef AIMS_DEPRECATED
#  if defined(AIMS_DISABLE_DEPRECATE_WARNINGS)
#    define AIMS_DEPRECATED(msg)
#  elif defined(__GNUC__)
#    define AIMS_DEPRECATED(msg) __attribute__((deprecated(msg)))
#  else
#    define AIMS_DEPRECATED(msg)
#  endif
#endif

#ifdef __cplusplus
#  define AIMS_EXTERN_C_BEGIN extern "C" {
#  define AIMS_EXTERN_C_END }
#else
#  define AIMS_EXTERN_C_BEGIN
#  define AIMS_EXTERN_C_END
#endif

#endif /* AIMS_EXPORT_H */
