/*
 * client_keep.c -- async calls that borrow the caller's request
 * (AIMS_CALL_KEEP_REQUEST, include/aims/aims_svc.h; docs/keep-request.md).
 *
 * Why. An idempotent async call copies its request so a retry can resend it
 * after the caller reused the message; a queued inproc:// call was copied a
 * second time by the node unless the client lent it its own copy. For a
 * 64-row infer request (200 KB) that copy was 84 % of the load generator's
 * CPU per call in P9 (docs/P9.md): on two cores every microsecond the caller
 * spends comes out of the instances'. A caller that keeps its request until
 * done() anyway (a ring of prepared requests, a request per in-flight slot)
 * can say so, and the client borrows the message instead.
 *
 * How. The promise is the caller's half; the library's half is that done()
 * never runs while anything still reads the request. Readers are counted on
 * the call (cl_call.rdgate): the attempt's sender takes one before the
 * attempt is linked (from then on a cancel, the deadline sweeper or on_close
 * may finish the call) and drops it when the request is encoded (stream
 * transports) or hands it to the node (inproc://: the node borrows the
 * request, AIMSI_REQ_KEPT, and node_done drops it before delivering). The
 * finisher (aimsi_client_finish_call) runs done() at once when no reader is
 * left -- the common case: the reply came from the only reader. Otherwise it
 * parks the outcome on the call (status, error text, a copy of the reply:
 * an inproc attempt abandoned at its try timeout may still be running while
 * its retry answers) and sets CL_RD_FIN; the reader whose put leaves exactly
 * CL_RD_FIN runs done() and drops the finisher's reference. Readers are
 * never added after the finish (no attempt starts once a call finished), so
 * exactly one party runs done(): the finisher if its fetch_or saw no reader,
 * else the last put.
 */
#include <string.h>

#include "../core/aimsi_core.h"
#include "aimsi_client.h"
#include "aimsi_msg.h"

void aimsi_client_rd_get(cl_call *k)
{
    atomic_fetch_add_explicit(&k->rdgate, 1, memory_order_acq_rel);
}

/* Run the parked outcome and drop the finisher's reference on k. */
static void keep_run(cl_call *k)
{
    k->done(k->user, k->fin_st, k->fin_reply, k->fin_err != NULL ? k->fin_err : "out of memory");
    aimsi_client_keep_free(k);
    aimsi_client_call_unref(k);
}

void aimsi_client_rd_put(cl_call *k)
{
    if (atomic_fetch_sub_explicit(&k->rdgate, 1, memory_order_acq_rel) == CL_RD_FIN + 1u) {
        keep_run(k);
    }
}

int aimsi_client_keep_finish(cl_call *k, aims_status st, const aims_msg *reply, const char *err)
{
    if (atomic_load_explicit(&k->rdgate, memory_order_acquire) == 0) {
        return 1; /* nobody reads the request: done() now, reply borrowed as usual */
    }
    k->fin_st = st;
    k->fin_err = aimsi_strdup(err != NULL ? err : "");
    if (reply != NULL) {
        k->fin_reply = aimsi_malloc(sizeof(*k->fin_reply));
        if (k->fin_reply != NULL) {
            aimsi_msg_init(k->fin_reply);
            if (aimsi_msg_copy(k->fin_reply, reply) != AIMS_OK) {
                aimsi_msg_fini(k->fin_reply);
                aimsi_free(k->fin_reply);
                k->fin_reply = NULL;
            }
        }
        if (k->fin_reply == NULL) {
            k->fin_st = AIMS_E_NOMEM;
            aimsi_free(k->fin_err);
            k->fin_err = aimsi_strdup("out of memory keeping the reply until the request's "
                                      "last reader finished (AIMS_CALL_KEEP_REQUEST)");
        }
    }
    const unsigned old = atomic_fetch_or_explicit(&k->rdgate, CL_RD_FIN, memory_order_acq_rel);
    if ((old & ~CL_RD_FIN) == 0) {
        keep_run(k); /* the last reader left between our load and the flag */
    }
    return 0;
}

void aimsi_client_keep_free(cl_call *k)
{
    if (k->fin_reply != NULL) {
        aimsi_msg_fini(k->fin_reply);
        aimsi_free(k->fin_reply);
        k->fin_reply = NULL;
    }
    aimsi_free(k->fin_err);
    k->fin_err = NULL;
}
