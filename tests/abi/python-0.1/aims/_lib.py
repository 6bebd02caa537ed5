"""Loading libaims and declaring the C prototypes.

Why a separate module: the prototype table below is the binding's whole view of
the C ABI. The symbol-table test compares its keys with src/libaims.map, so a
function added to the library without a Python declaration (or a declaration
that the library does not export) fails the test suite.

Every prototype is declared, including the start-up hooks (aims_set_allocator,
aims_set_log) that the Python API only partly exposes: a ctypes call through an
undeclared prototype would silently truncate 64-bit pointers and sizes.
"""

import ctypes
import os

#: The library major version this package is written against (SONAME libaims.so.0).
EXPECTED_MAJOR = 0
SONAME = "libaims.so.0"

# C type aliases, named after the C declarations so the table reads like the headers.
# Enums are C ints: status (aims_status), param, param_type, fmt (aims_format),
# step_kind, log_level, model_kind, activation, output, metric, stat.
status = param = param_type = fmt = step_kind = log_level = ctypes.c_int
model_kind = activation = output = metric = stat = ctypes.c_int
size_t = ctypes.c_size_t
handle = ctypes.c_void_p       # every opaque handle (aims_dataset *, ...)
handle_out = ctypes.POINTER(ctypes.c_void_p)
cstr = ctypes.c_char_p         # NUL-terminated input or static output string
f32p = ctypes.POINTER(ctypes.c_float)
i32p = ctypes.POINTER(ctypes.c_int32)
sizep = ctypes.POINTER(ctypes.c_size_t)

malloc_fn = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
realloc_fn = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
free_fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
log_fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p)
# aims_progress_fn: int (*)(void *user, const aims_trainer *t). ctypes re-acquires
# the GIL when C calls it (the C call that runs training released it).
progress_fn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)

P = ctypes.POINTER
u64p = P(ctypes.c_uint64)
# aims_clock_fn: uint64_t (*)(void *user)
clock_fn = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p)
# aims_watch_fn: void (*)(void *user, uint64_t rev, aims_event_kind, aims_instance,
#                         const char *service, const char *address)
watch_fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int,
                            ctypes.c_uint64, ctypes.c_char_p, ctypes.c_char_p)
# aims_event (aims_events.h) and aims_event_fn: void (*)(void *user, const aims_event *)
class Event(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int), ("epoch", ctypes.c_uint64),
                ("revision", ctypes.c_uint64), ("id", ctypes.c_uint64),
                ("service", ctypes.c_char_p), ("address", ctypes.c_char_p),
                ("weight", ctypes.c_uint32)]


event_fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(Event))
# aims_health_fn: void (*)(void *user, aims_instance, from, to)
health_fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int,
                             ctypes.c_int)

#: name -> (restype, [argtypes]); one entry per exported symbol of src/libaims.map.
PROTOTYPES = {
    # ---- aims_core.h ----------------------------------------------------------------
    "aims_strerror": (cstr, [status]),
    "aims_status_name": (cstr, [status]),
    "aims_errmsg": (cstr, []),
    "aims_version_number": (ctypes.c_uint, []),
    "aims_version_string": (cstr, []),
    "aims_build_info": (cstr, []),
    "aims_set_allocator": (status, [malloc_fn, realloc_fn, free_fn, ctypes.c_void_p]),
    "aims_alloc_live": (size_t, []),
    "aims_free": (None, [ctypes.c_void_p]),
    "aims_set_log": (status, [log_fn, ctypes.c_void_p, log_level]),
    "aims_param_info": (status, [param, P(param_type), P(ctypes.c_double),
                                 P(ctypes.c_double), P(ctypes.c_double)]),
    "aims_param_by_name": (status, [cstr, P(param)]),
    "aims_param_name": (cstr, [param]),
    # ---- aims_dataset.h: loader options ---------------------------------------------
    "aims_loadopts_create": (status, [handle_out]),
    "aims_loadopts_destroy": (None, [handle]),
    "aims_loadopts_set_param_i64": (status, [handle, param, ctypes.c_int64]),
    "aims_loadopts_get_param_i64": (status, [handle, param, P(ctypes.c_int64)]),
    "aims_loadopts_errmsg": (cstr, [handle]),
    # ---- aims_dataset.h: loading and building ---------------------------------------
    "aims_dataset_parse": (status, [fmt, ctypes.c_void_p, size_t, handle, handle_out]),
    "aims_dataset_load_file": (status, [fmt, cstr, handle, handle_out]),
    "aims_dataset_load_idx": (status, [cstr, cstr, handle, handle_out]),
    "aims_dataset_load_topics": (status, [cstr, handle, handle_out]),
    "aims_dataset_create_dense": (status, [size_t, size_t, f32p, i32p, handle_out]),
    "aims_dataset_create_dense_v2": (status, [size_t, size_t, f32p, i32p, handle,
                                              handle_out]),
    "aims_dataset_create_texts": (status, [size_t, P(ctypes.c_char_p), sizep, i32p,
                                           handle_out]),
    "aims_dataset_destroy": (None, [handle]),
    # ---- aims_dataset.h: accessors --------------------------------------------------
    "aims_dataset_rows": (size_t, [handle]),
    "aims_dataset_cols": (size_t, [handle]),
    "aims_dataset_features": (ctypes.c_void_p, [handle]),
    "aims_dataset_labels": (ctypes.c_void_p, [handle]),
    "aims_dataset_targets": (ctypes.c_void_p, [handle]),
    "aims_dataset_num_classes": (size_t, [handle]),
    "aims_dataset_class_name": (cstr, [handle, size_t]),
    "aims_dataset_tokens": (status, [handle, P(ctypes.c_void_p), P(ctypes.c_void_p),
                                     P(ctypes.c_void_p)]),
    "aims_dataset_token_dim": (size_t, [handle]),
    # Returns bytes that are not NUL-terminated: a raw pointer, read with string_at.
    "aims_dataset_text": (ctypes.c_void_p, [handle, size_t, sizep]),
    "aims_dataset_errmsg": (cstr, [handle]),
    # ---- aims_dataset.h: reordering, views, persistence -----------------------------
    "aims_dataset_shuffle": (status, [handle, ctypes.c_uint64]),
    "aims_dataset_view": (status, [handle, size_t, size_t, handle_out]),
    "aims_dataset_select": (status, [handle, sizep, size_t, handle_out]),
    "aims_dataset_split": (status, [handle, ctypes.c_double, ctypes.c_uint64, ctypes.c_int,
                                    handle_out, handle_out]),
    "aims_dataset_save": (status, [handle, cstr]),
    # ---- aims_pipeline.h ------------------------------------------------------------
    "aims_pipeline_create": (status, [handle_out]),
    "aims_pipeline_destroy": (None, [handle]),
    "aims_pipeline_add": (status, [handle, step_kind, sizep]),
    "aims_pipeline_set_step_param_i64": (status, [handle, size_t, param, ctypes.c_int64]),
    "aims_pipeline_set_step_param_f64": (status, [handle, size_t, param, ctypes.c_double]),
    "aims_pipeline_get_step_param_i64": (status, [handle, size_t, param, P(ctypes.c_int64)]),
    "aims_pipeline_get_step_param_f64": (status, [handle, size_t, param, P(ctypes.c_double)]),
    "aims_pipeline_set_param_i64": (status, [handle, param, ctypes.c_int64]),
    "aims_pipeline_get_param_i64": (status, [handle, param, P(ctypes.c_int64)]),
    "aims_pipeline_num_steps": (size_t, [handle]),
    "aims_pipeline_step_kind": (step_kind, [handle, size_t]),
    "aims_pipeline_is_fitted": (ctypes.c_int, [handle]),
    "aims_pipeline_fit": (status, [handle, handle]),
    "aims_pipeline_transform": (status, [handle, handle, handle_out]),
    "aims_pipeline_fit_transform": (status, [handle, handle, handle_out]),
    "aims_pipeline_transform_rows": (status, [handle, f32p, size_t, size_t, f32p, size_t]),
    "aims_pipeline_transform_texts": (status, [handle, P(ctypes.c_char_p), sizep, size_t,
                                               handle_out]),
    "aims_pipeline_output_cols": (status, [handle, sizep]),
    "aims_pipeline_save": (status, [handle, cstr]),
    "aims_pipeline_load": (status, [cstr, handle_out]),
    "aims_pipeline_parse": (status, [ctypes.c_void_p, size_t, handle_out]),
    "aims_pipeline_errmsg": (cstr, [handle]),
    # ---- aims_model.h: models ---------------------------------------------------------
    "aims_model_create": (status, [model_kind, size_t, size_t, handle_out]),
    "aims_model_destroy": (None, [handle]),
    "aims_model_add_dense": (status, [handle, size_t, activation]),
    "aims_model_set_param_i64": (status, [handle, param, ctypes.c_int64]),
    "aims_model_set_param_f64": (status, [handle, param, ctypes.c_double]),
    "aims_model_get_param_i64": (status, [handle, param, P(ctypes.c_int64)]),
    "aims_model_get_param_f64": (status, [handle, param, P(ctypes.c_double)]),
    "aims_model_kind_of": (model_kind, [handle]),
    "aims_model_input_dim": (size_t, [handle]),
    "aims_model_output_dim": (size_t, [handle]),
    "aims_model_num_params": (size_t, [handle]),
    "aims_model_is_trained": (ctypes.c_int, [handle]),
    "aims_model_is_quantized": (ctypes.c_int, [handle]),
    "aims_model_errmsg": (cstr, [handle]),
    "aims_model_predict": (status, [handle, output, f32p, size_t, size_t, f32p, size_t]),
    "aims_model_predict_class": (status, [handle, f32p, size_t, size_t, i32p, size_t]),
    "aims_model_predict_dataset": (status, [handle, output, handle, f32p, size_t]),
    "aims_model_evaluate": (status, [handle, handle, handle_out]),
    "aims_model_save": (status, [handle, cstr]),
    "aims_model_load": (status, [cstr, handle_out]),
    "aims_model_parse": (status, [ctypes.c_void_p, size_t, handle_out]),
    "aims_model_clone": (status, [handle, handle_out]),
    "aims_model_quantize": (status, [handle, handle, handle_out]),
    # ---- aims_model.h: evaluation results ---------------------------------------------
    "aims_eval_destroy": (None, [handle]),
    "aims_eval_get_metric": (status, [handle, metric, P(ctypes.c_double)]),
    "aims_eval_num_classes": (size_t, [handle]),
    "aims_eval_get_confusion": (status, [handle, P(ctypes.c_int64), size_t]),
    # ---- aims_model.h: training -------------------------------------------------------
    "aims_trainer_create": (status, [handle, handle_out]),
    "aims_trainer_destroy": (None, [handle]),
    "aims_trainer_set_param_i64": (status, [handle, param, ctypes.c_int64]),
    "aims_trainer_set_param_f64": (status, [handle, param, ctypes.c_double]),
    "aims_trainer_get_param_i64": (status, [handle, param, P(ctypes.c_int64)]),
    "aims_trainer_get_param_f64": (status, [handle, param, P(ctypes.c_double)]),
    "aims_trainer_set_progress_fn": (status, [handle, progress_fn, ctypes.c_void_p]),
    "aims_trainer_begin": (status, [handle, handle, handle]),
    "aims_trainer_step": (status, [handle, P(ctypes.c_int)]),
    "aims_trainer_epoch": (status, [handle, P(ctypes.c_int)]),
    "aims_trainer_fit": (status, [handle, handle, handle]),
    "aims_trainer_cancel": (None, [handle]),
    "aims_trainer_get_stat": (status, [handle, stat, P(ctypes.c_double)]),
    "aims_trainer_checkpoint": (status, [handle, cstr]),
    "aims_trainer_restore": (status, [handle, cstr]),
    "aims_trainer_errmsg": (cstr, [handle]),
    # ---- aims_dist.h: data-parallel training --------------------------------------------
    "aims_trainer_set_shards": (status, [handle, ctypes.c_int]),
    "aims_trainer_set_mpi": (status, [handle, ctypes.c_int]),
    "aims_init_mpi": (status, [P(ctypes.c_int), P(ctypes.c_int)]),
    "aims_finalize_mpi": (status, []),
    # ---- aims_train_mpi.h: a train service over MPI ranks ----------------------------------
    "aims_service_set_mpi": (status, [handle, ctypes.c_int]),
    "aims_follow_mpi": (status, []),
    "aims_stop_mpi_followers": (status, []),
    # ---- aims_model.h: bundles --------------------------------------------------------
    "aims_bundle_create": (status, [handle, handle, handle_out]),
    "aims_bundle_destroy": (None, [handle]),
    "aims_bundle_errmsg": (cstr, [handle]),
    "aims_bundle_set_meta": (status, [handle, cstr, cstr]),
    "aims_bundle_meta": (cstr, [handle, cstr]),
    "aims_bundle_model": (handle, [handle]),
    "aims_bundle_pipeline": (handle, [handle]),
    "aims_bundle_save": (status, [handle, cstr]),
    "aims_bundle_load": (status, [cstr, handle_out]),
    "aims_bundle_parse": (status, [ctypes.c_void_p, size_t, handle_out]),
    "aims_bundle_predict_rows": (status, [handle, output, f32p, size_t, size_t, f32p, size_t]),
    "aims_bundle_predict_texts": (status, [handle, output, P(ctypes.c_char_p), sizep, size_t,
                                           f32p, size_t]),

    # ---- aims_orch.h -----------------------------------------------------------------
    "aims_registry_create": (status, [handle_out]),
    "aims_registry_destroy": (None, [handle]),
    "aims_registry_set_clock": (status, [handle, clock_fn, ctypes.c_void_p]),
    "aims_registry_register": (status, [handle, cstr, cstr, ctypes.c_uint32, ctypes.c_uint64,
                                        u64p]),
    "aims_registry_heartbeat": (status, [handle, ctypes.c_uint64]),
    "aims_registry_set_weight": (status, [handle, ctypes.c_uint64, ctypes.c_uint32]),
    "aims_registry_deregister": (status, [handle, ctypes.c_uint64]),
    "aims_registry_sweep": (status, [handle, sizep]),
    "aims_registry_revision": (ctypes.c_uint64, [handle]),
    "aims_registry_lookup": (status, [handle, cstr, u64p, size_t, sizep]),
    "aims_registry_get_address": (status, [handle, ctypes.c_uint64, ctypes.c_char_p, size_t,
                                       sizep]),
    "aims_registry_weight": (ctypes.c_uint32, [handle, ctypes.c_uint64]),
    "aims_registry_watch": (status, [handle, cstr, ctypes.c_uint64, watch_fn, ctypes.c_void_p,
                                     u64p]),
    "aims_registry_unwatch": (status, [handle, ctypes.c_uint64]),
    "aims_registry_publish": (status, [handle, cstr, cstr, cstr, cstr]),
    "aims_registry_get_publication": (status, [handle, cstr, cstr, ctypes.c_char_p, size_t,
                                               ctypes.c_char_p, size_t]),
    "aims_client_publish_version": (status, [handle, cstr, cstr, cstr, cstr]),
    "aims_node_publish_version": (status, [handle, cstr, cstr, cstr, cstr]),
    "aims_balancer_create": (status, [ctypes.c_int, ctypes.c_uint64, handle_out]),
    "aims_balancer_destroy": (None, [handle]),
    "aims_balancer_set_clock": (status, [handle, clock_fn, ctypes.c_void_p]),
    "aims_balancer_set_instances": (status, [handle, u64p, P(ctypes.c_uint32), size_t]),
    "aims_balancer_set_available": (status, [handle, ctypes.c_uint64, ctypes.c_int]),
    "aims_balancer_pick": (status, [handle, ctypes.c_uint64, u64p]),
    "aims_balancer_done": (status, [handle, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_int]),
    "aims_balancer_outstanding": (ctypes.c_uint64, [handle, ctypes.c_uint64]),
    "aims_health_create": (status, [handle_out]),
    "aims_health_destroy": (None, [handle]),
    "aims_health_set_clock": (status, [handle, clock_fn, ctypes.c_void_p]),
    "aims_health_set_param_i64": (status, [handle, param, ctypes.c_int64]),
    "aims_health_set_change_fn": (status, [handle, health_fn, ctypes.c_void_p]),
    "aims_health_add": (status, [handle, ctypes.c_uint64]),
    "aims_health_remove": (status, [handle, ctypes.c_uint64]),
    "aims_health_report": (status, [handle, ctypes.c_uint64, ctypes.c_int]),
    "aims_health_state_of": (ctypes.c_int, [handle, ctypes.c_uint64]),
    "aims_health_is_in_panic": (ctypes.c_int, [handle]),
    "aims_metrics_create": (status, [handle_out]),
    "aims_metrics_destroy": (None, [handle]),
    "aims_metrics_count": (status, [handle, cstr, cstr, ctypes.c_uint64]),
    "aims_metrics_set_gauge": (status, [handle, cstr, cstr, ctypes.c_double]),
    "aims_metrics_observe": (status, [handle, cstr, cstr, ctypes.c_uint64]),
    "aims_metrics_quantile": (status, [handle, cstr, cstr, ctypes.c_double,
                                       P(ctypes.c_double)]),
    "aims_metrics_prometheus": (status, [handle, P(ctypes.c_void_p), sizep]),
}

# ---- aims_svc.h -----------------------------------------------------------------
# aims_handler_fn: aims_status (*)(void *user, const char *method, const aims_msg *req,
#                                  aims_msg *reply, uint64_t deadline_ns)
# Runs on a node worker thread (or, inline, on the calling thread): ctypes
# acquires the GIL for the call, the C call that waits releases it.
handler_fn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p,
                              ctypes.c_void_p, ctypes.c_uint64)
# aims_done_fn: void (*)(void *user, aims_status, const aims_msg *reply, const char *error)
done_fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                           ctypes.c_char_p)
dtype = ctypes.c_int           # aims_dtype (enum)
# aims_audit_fn: void (*)(void *user, int64_t unix_ms, aims_audit_action action,
#                         const char *identity, const char *peer, const char *resource,
#                         aims_status status, const char *detail)
audit_fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int,
                            ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int,
                            ctypes.c_char_p)

#: The service API (nodes, services, clients, messages). Its implementation lands
#: piece by piece, so a symbol joins PROTOTYPES only when the loaded library
#: exports it (see below): the table then stays equal to the exported symbols and
#: src/libaims.map, and the Python features over a missing symbol are unavailable
#: (``has(name)`` says which) instead of failing the import.
SVC_PROTOTYPES = {
    "aims_msg_create": (status, [handle_out]),
    "aims_msg_destroy": (None, [handle]),
    "aims_msg_clear": (None, [handle]),
    "aims_msg_add": (status, [handle, cstr, dtype, u64p, size_t, ctypes.c_void_p,
                              ctypes.c_uint]),
    "aims_msg_alloc": (status, [handle, cstr, dtype, u64p, size_t, P(ctypes.c_void_p)]),
    "aims_msg_num_tensors": (size_t, [handle]),
    "aims_msg_get_tensor": (status, [handle, size_t, P(ctypes.c_char_p), P(dtype), sizep, P(u64p),
                              P(ctypes.c_void_p), sizep]),
    "aims_msg_find": (status, [handle, cstr, sizep]),
    "aims_msg_set_error": (status, [handle, cstr]),
    "aims_msg_error": (cstr, [handle]),
    "aims_node_create": (status, [cstr, handle_out]),
    "aims_node_destroy": (None, [handle]),
    "aims_node_set_param_i64": (status, [handle, param, ctypes.c_int64]),
    # const aims_transport *: host transports are not exposed to Python (a vtable
    # of Python callbacks on the I/O path); declared so the table matches the ABI.
    "aims_node_add_transport": (status, [handle, ctypes.c_void_p]),
    "aims_node_listen": (status, [handle, cstr]),
    "aims_node_get_address": (status, [handle, size_t, ctypes.c_char_p, size_t, sizep]),
    "aims_node_set_registry": (status, [handle, handle]),
    "aims_node_host_registry": (status, [handle, handle]),
    "aims_node_join": (status, [handle, cstr]),
    "aims_node_metrics": (handle, [handle]),
    "aims_node_errmsg": (cstr, [handle]),
    # HTTP front door (aims_http.h)
    "aims_http_create": (status, [handle, handle_out]),
    "aims_http_destroy": (None, [handle]),
    "aims_http_set_param_i64": (status, [handle, param, ctypes.c_int64]),
    "aims_http_set_listen": (status, [handle, cstr]),
    "aims_http_start": (status, [handle]),
    "aims_http_stop": (None, [handle]),
    "aims_http_url": (status, [handle, ctypes.c_char_p, size_t, sizep]),
    "aims_http_errmsg": (cstr, [handle]),
    "aims_http_set_tls": (status, [handle, handle]),
    "aims_service_add_handler": (status, [handle, cstr, handler_fn, ctypes.c_void_p,
                                          handle_out]),
    "aims_service_add_infer": (status, [handle, cstr, handle, handle_out]),
    "aims_service_add_preprocess": (status, [handle, cstr, handle, handle_out]),
    "aims_service_add_train": (status, [handle, cstr, handle, handle_out]),
    "aims_service_add_optimize": (status, [handle, cstr, handle_out]),
    "aims_service_set_param_i64": (status, [handle, param, ctypes.c_int64]),
    "aims_service_start": (status, [handle]),
    "aims_service_stop": (status, [handle, ctypes.c_int64]),
    "aims_service_swap_bundle": (status, [handle, handle]),
    "aims_service_set_store": (status, [handle, cstr]),
    "aims_service_get_stat": (status, [handle, ctypes.c_int, P(ctypes.c_double)]),
    "aims_service_errmsg": (cstr, [handle]),
    "aims_client_create": (status, [handle_out]),
    "aims_client_destroy": (None, [handle]),
    "aims_client_set_param_i64": (status, [handle, param, ctypes.c_int64]),
    "aims_client_set_param_f64": (status, [handle, param, ctypes.c_double]),
    "aims_client_add_transport": (status, [handle, ctypes.c_void_p]),
    "aims_client_set_registry": (status, [handle, handle]),
    "aims_client_join": (status, [handle, cstr]),
    "aims_client_call": (status, [handle, cstr, cstr, handle, handle, ctypes.c_uint,
                                  ctypes.c_int64]),
    "aims_client_call_async": (status, [handle, cstr, cstr, handle, ctypes.c_uint,
                                        ctypes.c_int64, done_fn, ctypes.c_void_p]),
    "aims_client_call_addr": (status, [handle, cstr, cstr, cstr, handle, handle,
                                       ctypes.c_int64]),
    "aims_client_metrics": (handle, [handle]),
    "aims_client_balance_degree": (status, [handle, cstr, ctypes.c_int64,
                                            ctypes.POINTER(ctypes.c_double),
                                            ctypes.POINTER(ctypes.c_double)]),
    "aims_client_errmsg": (cstr, [handle]),
    # aims_cancel.h: call handles, cancellation (docs/CANCEL.md; Python: _call.py)
    "aims_client_call_start": (status, [handle, cstr, cstr, handle, ctypes.c_uint,
                                        ctypes.c_int64, handle_out]),
    "aims_call_wait": (status, [handle, handle]),
    "aims_call_is_done": (ctypes.c_int, [handle]),
    "aims_call_cancel": (status, [handle]),
    "aims_call_destroy": (None, [handle]),
    "aims_call_errmsg": (cstr, [handle]),
    "aims_msg_is_cancelled": (ctypes.c_int, [handle]),
    # aims_events.h: ordered, resumable registry events (docs/EVENTS.md; Python: _events.py)
    "aims_client_watch": (status, [handle, cstr, ctypes.c_uint64, ctypes.c_uint64, event_fn,
                                   ctypes.c_void_p, handle_out]),
    "aims_event_watch_destroy": (None, [handle]),
    "aims_event_watch_errmsg": (cstr, [handle]),
    # aims_lifecycle.h: versions, weights, rollback, canary (docs/LIFECYCLE.md; Python: _svc.py)
    "aims_service_set_model_dir": (status, [handle, cstr]),
    "aims_client_load_version": (status, [handle, cstr, cstr, ctypes.c_void_p, size_t, cstr,
                                          ctypes.c_int64]),
    "aims_client_unload_version": (status, [handle, cstr, cstr, ctypes.c_int64]),
    "aims_client_set_version_weight": (status, [handle, cstr, cstr, ctypes.c_uint32,
                                                ctypes.c_int64]),
    "aims_client_rollback": (status, [handle, cstr, ctypes.c_int64]),
    "aims_client_canary_start": (status, [handle, cstr, cstr, ctypes.c_void_p, size_t, cstr,
                                          ctypes.c_uint32, cstr, ctypes.c_int64]),
    "aims_client_canary_state": (status, [handle, cstr, P(ctypes.c_int), ctypes.c_int64]),
    # aims_tls.h: mutual TLS for tls:// (issue 10).
    "aims_tls_config_create": (status, [handle_out]),
    "aims_tls_config_destroy": (None, [handle]),
    "aims_tls_config_set_ca": (status, [handle, cstr]),
    "aims_tls_config_set_cert": (status, [handle, cstr, cstr]),
    "aims_tls_config_add_peer_name": (status, [handle, cstr]),
    "aims_tls_config_set_handshake_timeout": (status, [handle, ctypes.c_uint32]),
    "aims_tls_config_reload": (status, [handle]),
    "aims_tls_config_identity": (cstr, [handle]),
    "aims_tls_config_errmsg": (cstr, [handle]),
    "aims_node_set_tls": (status, [handle, handle]),
    "aims_client_set_tls": (status, [handle, handle]),
    # aims_ident.h: the caller's identity (handlers), the client's bearer token
    "aims_msg_caller": (cstr, [handle]),
    "aims_client_set_token": (status, [handle, cstr]),
    # aims_policy.h: authorization policy, JWT bearer tokens, audit
    "aims_policy_create": (status, [handle_out]),
    "aims_policy_destroy": (None, [handle]),
    "aims_policy_load_file": (status, [handle, cstr]),
    "aims_policy_load_string": (status, [handle, cstr, cstr]),
    "aims_policy_check": (status, [handle, cstr, cstr, cstr]),
    "aims_policy_errmsg": (cstr, [handle]),
    "aims_policy_set_jwt_hs256": (status, [handle, ctypes.c_void_p, size_t]),
    "aims_policy_set_jwt_es256": (status, [handle, cstr]),
    "aims_policy_set_jwt_claims": (status, [handle, cstr, cstr, ctypes.c_int]),
    "aims_policy_verify_token": (status, [handle, cstr, ctypes.c_char_p, size_t]),
    "aims_audit_action_name": (cstr, [ctypes.c_int]),
    "aims_audit_json": (size_t, [ctypes.c_char_p, size_t, ctypes.c_int64, ctypes.c_int, cstr,
                                 cstr, cstr, status, cstr]),
    "aims_node_set_policy": (status, [handle, handle]),
    "aims_node_set_audit": (status, [handle, ctypes.c_void_p, ctypes.c_void_p]),
}

#: Symbols of the model API that src/libaims.map does not list yet (their
#: implementation is still landing): not declared, so the table stays == the map.
PENDING = ()
for _name in PENDING:
    PROTOTYPES.pop(_name, None)



def _open():
    """Open the shared library in the order of _find.py ($AIMS_LIBRARY, the loader
    path, find_library, pkg-config, the interpreter prefix, a build tree)."""
    global found_how, found_name
    from . import _find
    handle, found_how, found_name = _find.open_library()
    return handle


def _declare(lib):
    missing = []
    for name, (restype, argtypes) in PROTOTYPES.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            missing.append(name)
            continue
        fn.restype = restype
        fn.argtypes = argtypes
    if missing:
        raise ImportError("aims: the C library %r lacks %d symbol(s) this package needs: %s"
                          % (getattr(lib, "_name", "?"), len(missing), ", ".join(missing)))


def _check_version(lib):
    lib.aims_version_number.restype = ctypes.c_uint
    lib.aims_version_number.argtypes = []
    number = lib.aims_version_number()
    major = number // 10000
    if major != EXPECTED_MAJOR:
        raise ImportError("aims: the C library %r is version %d.%d.%d, but this package "
                          "needs major version %d"
                          % (getattr(lib, "_name", "?"), major, number // 100 % 100,
                             number % 100, EXPECTED_MAJOR))
    return number


lib = _open()
# Version first: a library of another major may not even have our symbols, and its
# mismatch is the message the user needs.
version_number = _check_version(lib)
#: The service API is part of the same contract: every symbol must be there
#: (the symbol-equality test compares PROTOTYPES with the version script).
PROTOTYPES.update(SVC_PROTOTYPES)
_declare(lib)


def has(name):
    """True when the loaded library exports ``name`` and it is declared."""
    return name in PROTOTYPES
