/*
 * aimsi_transport.h -- the transport table contract (src/svc/transport/):
 * the built-in stream transports behind the public aims_transport vtable,
 * the per-owner table of transports by scheme a node or a client keeps,
 * URLs, and when a link is worth compressing.
 *
 * Why its own header: nodes, clients and the registry backends all dial or
 * listen through an aimsi_ttable, but none of them needs the node's or the
 * client's insides to do so; the table only needs the public transport
 * vtable and the TLS config.
 */
#ifndef AIMSI_TRANSPORT_H
#define AIMSI_TRANSPORT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "aims/aims_svc.h"
#include "aims/aims_tls.h"
#include "../../core/aimsi_core.h"

#define AIMSI_URL_MAX 256u
/* Frame payloads at least this big are zstd-compressed when that makes them
 * smaller and the link is worth it: requests when aimsi_url_compresses(url),
 * replies when the connection's peer compressed a request (the peer knows
 * where it is). */
#define AIMSI_COMPRESS_ABOVE (256u << 10)

/* Whether frames to this address should be compressed: not over ipc:// nor
 * tcp:// to a loopback host, where zstd (~0.5 GB/s at level 1) is slower than
 * the link -- a 6 MB float tensor round trip over ipc cost 4 x ~25 ms of
 * (de)compression for nothing; yes for other hosts and other schemes. */
int aimsi_url_compresses(const char *url);

/* Built-in stream transports: the same vtable hosts implement. */
const aims_transport *aimsi_transport_tcp(void);
const aims_transport *aimsi_transport_ipc(void);
/* tls:// (tls.c): the vtable of a config (cfg NULL: a placeholder whose listen
 * and dial say that no TLS config was set, or that the build has no TLS). */
const aims_transport *aimsi_transport_tls(aims_tls_config *cfg);
void aimsi_tls_config_ref(aims_tls_config *cfg);
/* Dials of cfg that resumed a cached session (tests, metrics). */
uint64_t aimsi_tls_config_resumed(const aims_tls_config *cfg);
/* Batched tls:// writes that left records waiting for a full socket (tls.c; tests). */
uint64_t aimsi_tls_config_batch_waits(const aims_tls_config *cfg);
/* recv()s its connections made into their read-ahead buffers (tls_bio.c, nb_read). */
uint64_t aimsi_tls_config_ra_fills(const aims_tls_config *cfg);
/* The PEM texts of cfg's certificate chain and key, read from its files now
 * (the HTTP front door hands them to its own TLS library); free both with
 * aimsi_free. AIMS_E_STATE without a certificate, AIMS_E_UNSUPPORTED without TLS. */
aims_status aimsi_tls_config_pems(const aims_tls_config *cfg, char **cert, char **key);
/* The PEM text of cfg's CA file (*ca NULL when it has none) and its allowed
 * peer names, each followed by '\n' (*names NULL without a CA); free both
 * with aimsi_free. AIMS_E_UNSUPPORTED for a CA directory or without TLS. */
aims_status aimsi_tls_config_trust(const aims_tls_config *cfg, char **ca, char **names);

/* A small per-owner table of transports by scheme (a node's or a client's):
 * built-ins first, host registrations override. Instances are created lazily
 * with the owner's hooks on first use. */
#define AIMSI_MAX_TRANSPORTS 8
typedef struct aimsi_tslot {
    aims_transport vt;  /* copied vtable (size-checked on registration) */
    char scheme[17];
    void *inst;         /* created instance, or NULL */
} aimsi_tslot;
/* Receive bounds of a node's stream transports (stream.c; the node
 * parameters AIMS_NODE_RX_*). Zero = off (a client's table). `held`: read-buffer
 * bytes above the first 64 KiB held by frames in progress, node-wide. */
typedef struct aimsi_rx_limits {
    int64_t min_rate;  /* bytes/s a frame in progress keeps up over 2 s windows */
    int64_t header_ms; /* first byte of a frame -> its whole header */
    int64_t budget;    /* most bytes `held` */
    int64_t pause_ms;  /* longest a connection waits for budget (reading paused); 0 = drop */
    _Atomic int64_t held;
    /* Observability of pausing (tests, logs): connections paused now, and
     * resumptions as soon as a release in the same transport made room vs by
     * the 1 s sweep (budget freed by another transport of the node). */
    _Atomic int64_t paused;
    _Atomic uint64_t resumed_on_release;
    _Atomic uint64_t resumed_by_sweep;
} aimsi_rx_limits;

typedef struct aimsi_ttable {
    aimsi_tslot slot[AIMSI_MAX_TRANSPORTS];
    size_t n;
    aims_transport_hooks hooks;
    uint64_t max_frame;
    aims_tls_config *tls; /* reference held for the tls slot, or NULL */
    aimsi_rx_limits rx; /* handed to built-in stream instances at creation */
} aimsi_ttable;

/* Fill with the built-ins (tcp, ipc). */
void aimsi_ttable_init(aimsi_ttable *tt, const aims_transport_hooks *hooks, uint64_t max_frame);
/* Register (copy) a host vtable: checks struct_size/version/scheme/function pointers. */
aims_status aimsi_ttable_add(aimsi_ttable *tt, const aims_transport *t);
/* Slot for the scheme of `url` ("scheme://..."), creating its instance if needed.
 * AIMS_E_UNSUPPORTED for an unknown scheme, AIMS_E_INVAL for a malformed url. */
aims_status aimsi_ttable_get(aimsi_ttable *tt, const char *url, aimsi_tslot **out);
/* Destroy every created instance. */
void aimsi_ttable_fini(aimsi_ttable *tt);
/* Use cfg for tls:// (takes a reference); AIMS_E_STATE once tls:// is in use. */
aims_status aimsi_ttable_set_tls(aimsi_ttable *tt, aims_tls_config *cfg);
/* The verified identity of the peer on `conn` of `slot` (tls://), or NULL. */
const char *aimsi_ttable_peer(const aimsi_tslot *slot, void *conn);

/* Send hint for the built-in stream transports (stream_tx.c), set by the
 * client around one send on its own thread: nonzero = this frame may wait for
 * the connection's I/O thread, which writes every frame queued by then in one
 * writev (async calls with others in flight). Host transports ignore it. */
extern _Thread_local int aimsi_transport_tl_defer;

/* Release hook for the built-in stream transports (stream_tx.c), set by the
 * client around one send on its own thread, like tl_defer: when fn is set,
 * the transport gives that frame back with fn(ctx, frame) -- on whichever
 * thread is done with it, maybe the I/O thread after its writev -- instead
 * of aimsi_free. The client recycles request frames this way (client_pool.c);
 * host transports ignore it, so it is set only on a stream slot
 * (aimsi_ttable_streams). */
typedef struct aimsi_frame_rel {
    void (*fn)(void *ctx, void *frame);
    void *ctx;
    /* NULL, or AIMSI_FRAME_LINK bytes (8-aligned) that live as long as the
     * frame (until fn gives it back) and that a stream transport may use as
     * the frame's node in its lock-free hand-over to the I/O thread: a
     * deferred frame with a link is pushed without the connection's mutex
     * (stream_tx.c). The client points it behind the end of a pooled frame
     * block (client_pool.c). */
    void *link;
} aimsi_frame_rel;
#define AIMSI_FRAME_LINK 64u
extern _Thread_local aimsi_frame_rel aimsi_transport_tl_release;
/* Nonzero when slot is one of the built-in stream families (tcp, ipc, tls). */
int aimsi_ttable_streams(const aimsi_tslot *slot);

/* Read bursts of the built-in stream transports (stream_rx.c). While an I/O
 * thread hands over the frames of one read, aimsi_transport_tl_burst points
 * at this: `more` says another whole frame (its header already checked by
 * aimsi_frame_peek) follows the one on_frame is being given, so on_frame will
 * be called again in this burst -- unless the connection is closed meanwhile,
 * when the burst ends without it; `seq` tells bursts apart. Every frame of a
 * burst stays valid, at the address on_frame was given, until the burst ends
 * (the read buffer is not moved or freed while it is delivered), so a hook
 * may keep the frames of a burst and handle them all at its last one: the
 * client unlinks every reply of a burst under one hold of its mutex
 * (client_send.c). NULL outside a burst, and always for host transports.
 * `now_ns` is the CLOCK_MONOTONIC time the read that brought the burst
 * returned: a hook that needs "now" per frame (a reply's latency, a request's
 * deadline) takes it from here instead of reading the clock once per frame
 * (clock reads were ~7 % of a pipelined call's samples). */
typedef struct aimsi_burst {
    uint64_t seq;
    int more;
    uint64_t now_ns;
} aimsi_burst;
extern _Thread_local const aimsi_burst *aimsi_transport_tl_burst;

/* Initialise a mutex that spins briefly before it sleeps (glibc's adaptive
 * type; a plain mutex elsewhere), for the locks a pipelining caller and an
 * I/O thread both take per call -- the client's and a stream connection's:
 * they are held for well under a microsecond, so when the two threads meet
 * on two cores a short spin beats a futex sleep and wake-up, which is what
 * made about one pipelined run in three several times more expensive per
 * call (P14, with a futex call per call). */
static inline int aimsi_mutex_init_spin(pthread_mutex_t *m)
{
#ifdef PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP
    pthread_mutexattr_t a;
    if (pthread_mutexattr_init(&a) == 0) {
        (void)pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ADAPTIVE_NP);
        const int rc = pthread_mutex_init(m, &a);
        pthread_mutexattr_destroy(&a);
        return rc;
    }
#endif
    return pthread_mutex_init(m, NULL);
}

/* Split "scheme://rest": writes the scheme (<= 16 bytes) and points *rest after "://". */
aims_status aimsi_url_split(const char *url, char *scheme, size_t scheme_cap, const char **rest);

#endif /* AIMSI_TRANSPORT_H */
