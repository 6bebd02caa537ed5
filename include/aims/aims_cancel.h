/*
 * aims_cancel.h -- call handles, cancellation and hedged requests
 * (docs/CANCEL.md).
 *
 * Call handles. aims_client_call_start starts a call like
 * aims_client_call_async and returns an aims_call handle instead of taking a
 * callback: wait for it (aims_call_wait), poll it (aims_call_is_done) or
 * cancel it (aims_call_cancel). Cancelling ends the call at once with
 * AIMS_E_CANCELLED (unless its outcome was already in) and tells the instance:
 * over tcp:// / ipc:// / tls:// a CANCEL frame names the request, in-process
 * the request's cancellation flag is set. On the instance a request that is
 * still queued never runs; a handler that is running may poll
 * aims_msg_is_cancelled(req) and return early. A cancelled call is never
 * retried.
 *
 * Hedging. With AIMS_CLIENT_HEDGE_MS >= 0, an aims_client_call or
 * aims_client_call_async (not a handle's aims_client_call_start)
 * flagged AIMS_CALL_IDEMPOTENT that has no reply after the hedge delay (the
 * set number of ms, or with 0 the service's recent p95 latency in this client,
 * capped at twice its median)
 * sends a second copy to another instance; the first successful reply wins
 * and the other copy is cancelled as above. A hedge takes a token from the
 * retry budget like a retry does (AIMS_CLIENT_RETRY_BUDGET,
 * AIMS_CLIENT_RETRY_MIN): when the bucket is empty no hedge is sent, so hedges
 * never exceed the budget. Client metrics: aims_client_hedges_total,
 * aims_client_hedges_won_total (the second copy answered first),
 * aims_client_hedges_cancelled_total (a losing copy was cancelled in flight),
 * aims_client_hedges_denied_total (the budget refused a hedge).
 *
 * Deadlines. A call's deadline travels with every request and every hedge (the
 * frame header, as the time the call has left: docs/WIRE.md); the instance
 * drops queued work that can no longer finish in time and hands the handler
 * the deadline (aims_handler_fn's deadline_ns). A call a handler makes on the
 * thread running it gets the smaller of its own timeout and what the
 * handler's request has left (docs/DEADLINES.md).
 *
 * Threads. An aims_call may be waited on, polled and cancelled from any
 * thread; aims_call_destroy is exclusive. aims_msg_is_cancelled is called by a
 * handler on the thread running it.
 */
#ifndef AIMS_CANCEL_H
#define AIMS_CANCEL_H

#include "aims_svc.h"

AIMS_EXTERN_C_BEGIN

typedef struct aims_call aims_call;

/**
 * @brief Start a call of @p method on @p service and return a handle to it.
 * @param req         request; copied when the call needs it after this returns.
 * @param flags       0 or AIMS_CALL_IDEMPOTENT (retries as aims_client_call).
 * @param timeout_ms  deadline from now; 0 = AIMS_CLIENT_TIMEOUT_MS.
 * @param out         [out] the handle; destroy it with aims_call_destroy.
 * @return AIMS_OK (the call runs; its outcome, even a failure to start,
 *         comes from aims_call_wait), AIMS_E_MISUSE, AIMS_E_NOMEM.
 * @note Thread safety: any thread, on a shared client.
 * @since 0.1
 */
AIMS_API aims_status aims_client_call_start(aims_client *c, const char *service,
                                            const char *method, const aims_msg *req,
                                            unsigned flags, int64_t timeout_ms,
                                            aims_call **out);
/**
 * @brief Wait until the call is over and return its outcome.
 * @param reply [out] cleared, then filled with the reply's tensors and error
 *        text (moved out of the handle: a second wait gives an empty reply).
 * @return the call's status (AIMS_E_CANCELLED after aims_call_cancel won),
 *         or AIMS_E_MISUSE. The call's own deadline bounds the wait.
 * @since 0.1
 */
AIMS_API aims_status aims_call_wait(aims_call *call, aims_msg *reply);
/** @brief 1 when the call's outcome is in (aims_call_wait will not block), else 0. @since 0.1 */
AIMS_API int aims_call_is_done(const aims_call *call);
/**
 * @brief Cancel the call: it ends with AIMS_E_CANCELLED unless its outcome is
 * already in; the instance drops it if queued and flags it if running
 * (aims_msg_is_cancelled). Idempotent.
 * @return AIMS_OK, AIMS_E_MISUSE.
 * @since 0.1
 */
AIMS_API aims_status aims_call_cancel(aims_call *call);
/**
 * @brief Cancel the call if it is still running, wait for it to end, free the
 * handle. NULL is a no-op. aims_client_destroy ends every call of the client
 * (AIMS_E_CLOSED), so a handle may be waited on and destroyed after its client.
 * @since 0.1
 */
AIMS_API void aims_call_destroy(aims_call *call);
/** @brief Error text of the call's outcome ("" while running, on success or for a bad handle). @since 0.1 */
AIMS_API const char *aims_call_errmsg(const aims_call *call);

/**
 * @brief For a handler: 1 when the caller cancelled the request @p req it is
 * running (a CANCEL frame, aims_call_cancel, or a hedge that lost), else 0.
 * A long handler polls it and returns early (any status; the caller no
 * longer waits for the reply).
 * @param req the request the handler was given (other messages answer 0).
 * @note Thread safety: call it on the thread running the handler.
 * @since 0.1
 */
AIMS_API int aims_msg_is_cancelled(const aims_msg *req);

AIMS_EXTERN_C_END

#endif /* AIMS_CANCEL_H */
