/*
 * test_burst.c -- read bursts of the stream transports and the client's
 * batched reply handling (goal P14, docs/pipelined.md), on ipc:// and tcp://.
 *
 * 1. The contract (aimsi_transport.h, aimsi_transport_tl_burst): a raw peer
 *    writes 32 frames with one write(); the listener's on_frame sees, per
 *    frame, a burst whose `more` is 1 for every frame but the last of its
 *    burst, and at that last frame every earlier frame of the burst is still
 *    at its address with its bytes unchanged (the client keeps them until
 *    then). At least one burst holds more than one frame.
 * 2. The client: a raw server answers 16 async calls with one write() holding
 *    a PONG, a reply to an id nobody asked for, and the 16 replies in reverse
 *    order, one of them with a valid header but a payload that does not
 *    decode. Every call ends exactly once: 15 with their own payload back,
 *    the damaged one with AIMS_E_CORRUPT; the stray frames are dropped, and
 *    the counting allocator balances.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <aims/aims.h>

#include "codec/aimsi_frame.h"
#include "core/aimsi_core.h"
#include "svc/transport/aimsi_transport.h"
#include "testalloc.h"
#include "tr_raw.h"

#define NF 32       /* frames of the contract test */
#define NCALL 16    /* calls of the client test */
#define WAIT_S 60   /* generous: a loaded machine under TSan is slow; never a timing assertion */

static const char *g_tr = "ipc";

/* A frame of `type` with one BYTES tensor "b" of `n` bytes of value `v` (n 0:
 * no tensor); service NULL: none. aimsi_malloc'd: aimsi_free it. */
static void *make_frame(uint8_t type, uint64_t id, const char *service, size_t n, uint8_t v,
                        size_t *out_len)
{
    uint8_t data[256];
    assert_true(n <= sizeof data);
    memset(data, v, n);
    void *f = tr_raw_frame(type, id, service, "m", AIMSI_DT_BYTES, n > 0 ? "b" : NULL, data, n,
                           out_len);
    assert_non_null(f);
    return f;
}

static void write_all(int fd, const uint8_t *p, size_t n)
{
    assert_int_equal(tr_raw_send_all(fd, p, n), 0);
}

/* A listening raw socket on g_tr; its URL in url. */
static int raw_listen(char *url, size_t cap, const char *dir)
{
    int fd;
    if (strcmp(g_tr, "tcp") == 0) {
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        fd = socket(AF_INET, SOCK_STREAM, 0);
        assert_true(fd >= 0);
        assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
        socklen_t al = sizeof a;
        assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
        snprintf(url, cap, "tcp://127.0.0.1:%u", (unsigned)ntohs(a.sin_port));
    } else {
        struct sockaddr_un a;
        memset(&a, 0, sizeof a);
        a.sun_family = AF_UNIX;
        snprintf(a.sun_path, sizeof a.sun_path, "%s/raw.sock", dir);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        assert_true(fd >= 0);
        assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
        snprintf(url, cap, "ipc://%s", a.sun_path);
    }
    assert_int_equal(listen(fd, 4), 0);
    return fd;
}

/* ---- 1. the transport's burst contract ------------------------------------------- */

typedef struct rec {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int frames;
    int bad;            /* a broken promise */
    int multi;          /* frames delivered with more = 1 */
    uint64_t seq;       /* the burst in progress */
    int open_burst;     /* the previous frame said more = 1 */
    const uint8_t *kept[NF];
    uint8_t copy[NF][128];
    size_t klen[NF];
    int nk;
} rec;

static void *c_accept(void *user, void *listener, void *conn)
{
    (void)listener;
    (void)conn;
    return user;
}

static void c_frame(void *conn_user, const void *frame, size_t len)
{
    rec *r = conn_user;
    const aimsi_burst *b = aimsi_transport_tl_burst;
    pthread_mutex_lock(&r->mu);
    if (b == NULL || len > sizeof r->copy[0] || r->frames >= NF) {
        r->bad++;
    } else {
        if (r->open_burst && b->seq != r->seq) {
            r->bad++; /* a burst ended without its last frame */
        }
        if (b->seq != r->seq) {
            r->nk = 0;
        }
        r->seq = b->seq;
        r->kept[r->nk] = frame;
        memcpy(r->copy[r->nk], frame, len);
        r->klen[r->nk] = len;
        r->nk++;
        r->open_burst = b->more;
        r->multi += b->more;
        if (!b->more) {
            /* the burst's frames are all still where they were given */
            for (int i = 0; i < r->nk; i++) {
                if (memcmp(r->kept[i], r->copy[i], r->klen[i]) != 0) {
                    r->bad++;
                }
            }
        }
    }
    r->frames++;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void c_close(void *conn_user, aims_status why)
{
    (void)conn_user;
    (void)why;
}

static const aims_transport *transport(void)
{
    return strcmp(g_tr, "tcp") == 0 ? aimsi_transport_tcp() : aimsi_transport_ipc();
}

static void test_burst_contract(void **state)
{
    (void)state;
    rec r;
    memset(&r, 0, sizeof r);
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    char dir[] = "/tmp/aims-burst-XXXXXX";
    assert_non_null(mkdtemp(dir));
    const aims_transport *t = transport();
    const aims_transport_hooks h = {&r, c_accept, c_frame, c_close};
    void *srv = NULL, *listener = NULL;
    assert_int_equal(t->create(t->factory_user, &h, (uint64_t)1 << 20, &srv), AIMS_OK);
    char url[160], bound[AIMSI_URL_MAX];
    if (strcmp(g_tr, "tcp") == 0) {
        snprintf(url, sizeof url, "tcp://127.0.0.1:0");
    } else {
        snprintf(url, sizeof url, "ipc://%s/s.sock", dir);
    }
    assert_int_equal(t->listen(srv, url, 0, bound, sizeof bound, &listener), AIMS_OK);
    /* NF frames, one write: they are in the socket before the listener reads */
    uint8_t *all = malloc((size_t)NF * 128);
    assert_non_null(all);
    size_t total = 0;
    for (int i = 0; i < NF; i++) {
        size_t len = 0;
        void *f = make_frame(AIMSI_FRAME_REQUEST, (uint64_t)i + 1, "svc", (size_t)(i % 40),
                             (uint8_t)i, &len);
        assert_true(total + len <= (size_t)NF * 128);
        memcpy(all + total, f, len);
        total += len;
        aimsi_free(f);
    }
    const int fd = tr_raw_connect(bound);
    write_all(fd, all, total);
    free(all);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += WAIT_S;
    pthread_mutex_lock(&r.mu);
    while (r.frames < NF && pthread_cond_timedwait(&r.cv, &r.mu, &ts) == 0) {
    }
    const int frames = r.frames, bad = r.bad, multi = r.multi, open = r.open_burst;
    pthread_mutex_unlock(&r.mu);
    assert_int_equal(frames, NF);
    assert_int_equal(bad, 0);
    assert_int_equal(open, 0);  /* the last frame closed its burst */
    assert_true(multi > 0);     /* one read brought several frames */
    assert_null(aimsi_transport_tl_burst); /* never set outside a hook */
    close(fd);
    t->destroy(srv);
    char path[160];
    snprintf(path, sizeof path, "%s/s.sock", dir);
    unlink(path);
    rmdir(dir);
    pthread_cond_destroy(&r.cv);
    pthread_mutex_destroy(&r.mu);
}

/* ---- 2. the client's burst of replies --------------------------------------------- */

typedef struct calls {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int ended[NCALL];
    aims_status st[NCALL];
    int echoed[NCALL]; /* the reply carried this call's own bytes */
    int n_ended;
} calls;

typedef struct slot {
    calls *cs;
    int i;
} slot;

static void on_done(void *user, aims_status status, const aims_msg *reply, const char *error)
{
    (void)error;
    slot *s = user;
    calls *cs = s->cs;
    int echoed = 0;
    if (status == AIMS_OK && reply != NULL) {
        const void *data = NULL;
        size_t bytes = 0;
        if (aims_msg_get_tensor(reply, 0, NULL, NULL, NULL, NULL, &data, &bytes) == AIMS_OK &&
            bytes == 8) {
            const uint8_t *d = data;
            echoed = d[0] == (uint8_t)(s->i + 1) && d[7] == (uint8_t)(s->i + 1);
        }
    }
    pthread_mutex_lock(&cs->mu);
    cs->ended[s->i]++;
    cs->st[s->i] = status;
    cs->echoed[s->i] = echoed;
    cs->n_ended++;
    pthread_cond_broadcast(&cs->cv);
    pthread_mutex_unlock(&cs->mu);
}

typedef struct server {
    int lfd;
    int damaged; /* request index answered with a payload that does not decode */
    int ok;
} server;

/* Read NCALL requests, then answer them all with one write(). */
static void *server_main(void *arg)
{
    server *sv = arg;
    const int fd = accept(sv->lfd, NULL, NULL);
    if (fd < 0) {
        return NULL;
    }
    uint8_t buf[1 << 16];
    size_t have = 0;
    uint64_t ids[NCALL];
    uint8_t vals[NCALL];
    int n = 0;
    while (n < NCALL) {
        const ssize_t r = read(fd, buf + have, sizeof buf - have);
        if (r <= 0) {
            close(fd);
            return NULL;
        }
        have += (size_t)r;
        size_t pos = 0;
        for (;;) {
            size_t total = 0;
            if (have - pos < AIMSI_FRAME_HEADER ||
                aimsi_frame_peek(buf + pos, have - pos, sizeof buf, &total) != AIMS_OK ||
                have - pos < total) {
                break;
            }
            aimsi_frame f;
            if (aimsi_frame_decode(buf + pos, total, sizeof buf, &f) == AIMS_OK && n < NCALL &&
                f.n_tensors == 1 && f.tensors[0].bytes == 8) {
                ids[n] = f.hdr.request_id;
                vals[n] = ((const uint8_t *)f.tensors[0].data)[0];
                n++;
                aimsi_frame_release(&f);
            }
            pos += total;
        }
        memmove(buf, buf + pos, have - pos);
        have -= pos;
    }
    uint8_t *out = malloc((size_t)(NCALL + 2) * 256);
    size_t olen = 0;
    size_t len = 0;
    void *f = make_frame(AIMSI_FRAME_PONG, 12345, NULL, 0, 0, &len);
    memcpy(out + olen, f, len);
    olen += len;
    aimsi_free(f);
    f = make_frame(AIMSI_FRAME_REPLY, 999999, NULL, 8, 0x77, &len); /* nobody asked */
    memcpy(out + olen, f, len);
    olen += len;
    aimsi_free(f);
    int ok = 1;
    for (int i = NCALL - 1; i >= 0; i--) {
        f = make_frame(AIMSI_FRAME_REPLY, ids[i], NULL, 8, vals[i], &len);
        if (vals[i] == (uint8_t)(sv->damaged + 1)) {
            uint8_t *p = f;
            memset(p + AIMSI_FRAME_HEADER, 0xff, 8); /* the tensor list: garbage */
            aimsi_frame chk;
            if (aimsi_frame_decode(p, len, sizeof buf, &chk) == AIMS_OK) {
                aimsi_frame_release(&chk);
                ok = 0; /* the damage must be one decode rejects */
            }
        }
        memcpy(out + olen, f, len);
        olen += len;
        aimsi_free(f);
    }
    write_all(fd, out, olen);
    free(out);
    sv->ok = ok;
    /* keep the connection until the client goes */
    while (read(fd, buf, sizeof buf) > 0) {
    }
    close(fd);
    return NULL;
}

static void test_client_reply_burst(void **state)
{
    (void)state;
    char dir[] = "/tmp/aims-burstc-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char url[200];
    server sv = {raw_listen(url, sizeof url, dir), 3, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, server_main, &sv), 0);
    aims_registry *r = NULL;
    aims_instance id;
    aims_client *c = NULL;
    assert_int_equal(aims_registry_create(&r), AIMS_OK);
    assert_int_equal(aims_registry_register(r, "svc", url, 1, 3600000, &id), AIMS_OK);
    assert_int_equal(aims_client_create(&c), AIMS_OK);
    assert_int_equal(aims_client_set_registry(c, r), AIMS_OK);
    calls cs;
    memset(&cs, 0, sizeof cs);
    pthread_mutex_init(&cs.mu, NULL);
    pthread_cond_init(&cs.cv, NULL);
    slot slots[NCALL];
    for (int i = 0; i < NCALL; i++) {
        slots[i].cs = &cs;
        slots[i].i = i;
        aims_msg *req = NULL;
        assert_int_equal(aims_msg_create(&req), AIMS_OK);
        uint8_t b[8];
        memset(b, i + 1, sizeof b);
        const uint64_t dims[1] = {8};
        assert_int_equal(aims_msg_add(req, "b", AIMS_DT_BYTES, dims, 1, b, 0), AIMS_OK);
        assert_int_equal(aims_client_call_async(c, "svc", "m", req, 0, WAIT_S * 1000, on_done,
                                                &slots[i]),
                         AIMS_OK);
        aims_msg_destroy(req); /* async calls copy or send before they return */
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += WAIT_S;
    pthread_mutex_lock(&cs.mu);
    while (cs.n_ended < NCALL && pthread_cond_timedwait(&cs.cv, &cs.mu, &ts) == 0) {
    }
    pthread_mutex_unlock(&cs.mu);
    aims_client_destroy(c);
    aims_registry_destroy(r);
    pthread_join(th, NULL);
    close(sv.lfd);
    char path[160];
    snprintf(path, sizeof path, "%s/raw.sock", dir);
    unlink(path);
    rmdir(dir);
    assert_true(sv.ok);
    assert_int_equal(cs.n_ended, NCALL);
    for (int i = 0; i < NCALL; i++) {
        assert_int_equal(cs.ended[i], 1);
        if (i == sv.damaged) {
            assert_int_equal(cs.st[i], AIMS_E_CORRUPT);
        } else {
            assert_int_equal(cs.st[i], AIMS_OK);
            assert_true(cs.echoed[i]);
        }
    }
    pthread_cond_destroy(&cs.cv);
    pthread_mutex_destroy(&cs.mu);
}

#define T(x) cmocka_unit_test_setup_teardown(x, ta_setup, ta_teardown)

int main(int argc, char **argv)
{
    if (argc > 1) {
        g_tr = argv[1];
    }
    const struct CMUnitTest tests[] = {
        T(test_burst_contract),
        T(test_client_reply_burst),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
