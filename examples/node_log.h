/*
 * node_log.h -- the log sink and environment configuration of the installed
 * programs (aims-node, and the aims CLI).
 *
 * Log records come from two places: the library (through aims_set_log) and
 * the program itself (nlog). Both go to stderr in one format: human-readable
 * lines on a terminal ("2026-12-07T02:51:07.123Z ERROR aims-node: ..."), JSON
 * lines otherwise ({"ts":"...","level":"error","src":"libaims","msg":"..."}),
 * so a scheduler's log collector gets structured records and a person at a
 * terminal gets text. --log-format human|json|auto and --log-level
 * debug|info|warn|error override the choice.
 */
#ifndef NODE_LOG_H
#define NODE_LOG_H

#include <aims/aims_core.h>

/* Start-up configuration (before any thread logs). 0 on success, -1 for an
 * unknown value. */
int nlog_set_format(const char *format);
int nlog_set_level(const char *level);
/* Install the sink as the library's log callback too. */
void nlog_install(const char *program);

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
void nlog(aims_log_level level, const char *fmt, ...);

/*
 * Flags from the environment: every variable AIMS_NODE_<FLAG>=value (prefix
 * given) becomes "--<flag> value" (upper case and '_' become lower case and
 * '-'), placed BEFORE the command-line arguments, so flags given on the
 * command line win for single-valued flags. Variables naming a repeatable flag
 * (`repeatable`, e.g. "listen") may hold several values separated by ','.
 * Variables naming a flag without a value (`switches`, e.g. "host-registry")
 * add the flag when set to 1/true/yes and nothing when 0/false/no/empty.
 * Returns a new argv (argv[0] first, NULL-terminated; never freed: it lives
 * as long as the process) and its count in *out_argc, or NULL on no memory.
 */
/* The argv nenv_args built last: it lives as long as the process, held in a
 * global so a leak checker sees it reachable at exit. */
extern char **nenv_argv;

char **nenv_args(const char *prefix, int argc, char **argv, const char *const *repeatable,
                 const char *const *switches, int *out_argc);

#endif /* NODE_LOG_H */
