/*
 * test_transport.c -- white-box tests of the built-in stream transports
 * (src/svc/transport: tcp://, ipc://) through their aims_transport vtables,
 * and of the scheme table. Every stream test runs on both tcp and ipc.
 *
 * The harness: a "server" instance whose hooks echo every frame back (or do
 * what a test asks: close from inside on_frame, count only), and a "client"
 * instance that dials it and records what comes back. Raw sockets play the
 * hostile peers (garbage bytes, a peer that never reads).
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
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "codec/aimsi_frame.h"
#include "core/aimsi_core.h"
#include "svc/transport/aimsi_transport.h"
#include "testalloc.h"
#include "tr_raw.h"

#define MAXP 64
#define WAIT_MS 60000 /* generous: a loaded machine under TSan is slow; never a timing assertion */

enum { MODE_ECHO = 0, MODE_COUNT = 1, MODE_CLOSE_IN_FRAME = 2 };

typedef struct ctx ctx;

typedef struct peer {
    ctx *cx;
    void *conn;
    int server;
    atomic_long frames;
    atomic_long bytes;
    atomic_long bad;       /* frames that failed verification or came out of order */
    atomic_long next_id;   /* smallest request id the next frame may carry */
    atomic_int closed;     /* on_close ran */
    atomic_int why;
    atomic_int released;   /* we called close(): no hook may run after that */
    atomic_int late_hook;  /* a hook ran after close() returned */
} peer;

struct ctx {
    const aims_transport *t;
    void *srv;
    void *cli;
    int mode;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    peer sp[MAXP]; /* server side, in accept order */
    atomic_int n_sp;
    peer cp[MAXP]; /* client side */
    char bound[AIMSI_URL_MAX];
    void *listener;
    char dir[64];
};

static void kick(ctx *cx)
{
    pthread_mutex_lock(&cx->mu);
    pthread_cond_broadcast(&cx->cv);
    pthread_mutex_unlock(&cx->mu);
}

typedef int (*pred_fn)(ctx *cx, void *arg);

static int wait_for(ctx *cx, pred_fn p, void *arg)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += WAIT_MS / 1000;
    pthread_mutex_lock(&cx->mu);
    int ok = p(cx, arg);
    while (!ok) {
        if (pthread_cond_timedwait(&cx->cv, &cx->mu, &ts) == ETIMEDOUT) {
            ok = p(cx, arg);
            break;
        }
        ok = p(cx, arg);
    }
    pthread_mutex_unlock(&cx->mu);
    return ok;
}

/* ---- frames ----------------------------------------------------------------- */

static uint8_t pattern(uint64_t id, size_t i)
{
    return (uint8_t)((i * 131u) ^ (id * 7u));
}

/* A REQUEST frame with one U8 tensor of n pattern bytes; aimsi_malloc'd (NULL: no memory). */
static void *make_frame(uint64_t id, size_t n, size_t *out_len)
{
    uint8_t *data = malloc(n > 0 ? n : 1);
    assert_non_null(data);
    for (size_t i = 0; i < n; i++) {
        data[i] = pattern(id, i);
    }
    void *f = tr_raw_frame(AIMSI_FRAME_REQUEST, id, "echo", "m", AIMSI_DT_U8, "x", data, n,
                           out_len);
    free(data);
    return f;
}

static int verify_frame(const void *frame, size_t len, uint64_t *out_id)
{
    aimsi_frame f;
    if (aimsi_frame_decode(frame, len, (size_t)1 << 30, &f) != AIMS_OK) {
        return 0;
    }
    int ok = f.n_tensors == 1 && f.tensors[0].dtype == AIMSI_DT_U8;
    if (ok) {
        const uint8_t *d = f.tensors[0].data;
        for (size_t i = 0; i < f.tensors[0].bytes; i++) {
            if (d[i] != pattern(f.hdr.request_id, i)) {
                ok = 0;
                break;
            }
        }
    }
    *out_id = f.hdr.request_id;
    aimsi_frame_release(&f);
    return ok;
}

/* ---- hooks --------------------------------------------------------------------- */

static void *on_accept(void *user, void *listener, void *conn)
{
    (void)listener;
    ctx *cx = user;
    const int i = atomic_load(&cx->n_sp);
    if (i >= MAXP) {
        return NULL;
    }
    peer *p = &cx->sp[i];
    p->cx = cx;
    p->conn = conn;
    p->server = 1;
    atomic_store(&cx->n_sp, i + 1);
    kick(cx);
    return p;
}

static void on_frame(void *conn_user, const void *frame, size_t len)
{
    peer *p = conn_user;
    ctx *cx = p->cx;
    if (atomic_load(&p->released)) {
        atomic_store(&p->late_hook, 1);
    }
    uint64_t id = 0;
    /* ids only grow on one connection: a smaller one means reordering */
    if (!verify_frame(frame, len, &id) || id < (uint64_t)atomic_load(&p->next_id)) {
        atomic_fetch_add(&p->bad, 1);
    }
    atomic_store(&p->next_id, (long)id + 1);
    /* count before echoing: the echo may be seen before this hook returns */
    atomic_fetch_add(&p->bytes, (long)len);
    atomic_fetch_add(&p->frames, 1);
    if (p->server && cx->mode == MODE_ECHO) {
        void *copy = aimsi_malloc(len);
        if (copy != NULL) {
            memcpy(copy, frame, len);
            (void)cx->t->send(cx->srv, p->conn, copy, len);
        }
    } else if (p->server && cx->mode == MODE_CLOSE_IN_FRAME) {
        cx->t->close(cx->srv, p->conn);
        atomic_store(&p->released, 1);
    }
    kick(cx);
}

static void on_close(void *conn_user, aims_status why)
{
    peer *p = conn_user;
    if (atomic_load(&p->released)) {
        atomic_store(&p->late_hook, 1);
    }
    atomic_store(&p->why, (int)why);
    atomic_store(&p->closed, 1);
    kick(p->cx);
}

static const aims_transport_hooks *hooks_for(ctx *cx, aims_transport_hooks *h)
{
    h->user = cx;
    h->on_accept = on_accept;
    h->on_frame = on_frame;
    h->on_close = on_close;
    return h;
}

/* ---- set-up ---------------------------------------------------------------------- */

static const char *listen_url(ctx *cx, char *buf, size_t cap)
{
    if (strcmp(cx->t->scheme, "tcp") == 0) {
        snprintf(buf, cap, "tcp://127.0.0.1:0");
    } else {
        snprintf(buf, cap, "ipc://%s/s.sock", cx->dir);
    }
    return buf;
}

static void cx_start(ctx *cx, const aims_transport *t, int mode, uint64_t srv_max)
{
    memset(cx, 0, sizeof *cx);
    cx->t = t;
    cx->mode = mode;
    pthread_mutex_init(&cx->mu, NULL);
    pthread_cond_init(&cx->cv, NULL);
    strcpy(cx->dir, "/tmp/aims-tt-XXXXXX");
    assert_non_null(mkdtemp(cx->dir));
    aims_transport_hooks h;
    assert_int_equal(t->create(t->factory_user, hooks_for(cx, &h), srv_max, &cx->srv), AIMS_OK);
    assert_int_equal(t->create(t->factory_user, hooks_for(cx, &h), (uint64_t)64 << 20, &cx->cli), AIMS_OK);
    char url[128];
    assert_int_equal(t->listen(cx->srv, listen_url(cx, url, sizeof url), 0, cx->bound,
                               sizeof cx->bound, &cx->listener),
                     AIMS_OK);
    assert_true(strncmp(cx->bound, t->scheme, 3) == 0);
}

static void cx_stop(ctx *cx)
{
    cx->t->destroy(cx->cli);
    cx->t->destroy(cx->srv);
    char path[128];
    snprintf(path, sizeof path, "%s/s.sock", cx->dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/x", cx->dir);
    unlink(path);
    rmdir(cx->dir);
    pthread_cond_destroy(&cx->cv);
    pthread_mutex_destroy(&cx->mu);
}

static peer *dial(ctx *cx, int i)
{
    peer *p = &cx->cp[i];
    p->cx = cx;
    assert_int_equal(cx->t->dial(cx->cli, cx->bound, p, &p->conn), AIMS_OK);
    return p;
}

static void send_frame(ctx *cx, void *inst, peer *p, uint64_t id, size_t n)
{
    size_t len = 0;
    void *f = make_frame(id, n, &len);
    assert_non_null(f);
    assert_int_equal(cx->t->send(inst, p->conn, f, len), AIMS_OK);
}

static int pred_frames(ctx *cx, void *arg)
{
    (void)cx;
    const long *want = arg;
    return atomic_load(&((peer *)(uintptr_t)want[0])->frames) >= want[1];
}

static void wait_frames(ctx *cx, peer *p, long n)
{
    long arg[2] = {(long)(uintptr_t)p, n};
    assert_true(wait_for(cx, pred_frames, arg));
}

static int pred_closed(ctx *cx, void *arg)
{
    (void)cx;
    return atomic_load(&((peer *)arg)->closed);
}

static int pred_accepted(ctx *cx, void *arg)
{
    return atomic_load(&cx->n_sp) >= *(int *)arg;
}

static void wait_accepted(ctx *cx, int n)
{
    assert_true(wait_for(cx, pred_accepted, &n));
}

/* A raw connected socket to the bound address (a hostile or stalled peer). */
static int raw_connect(const ctx *cx)
{
    return tr_raw_connect(cx->bound);
}

static void echo_check(ctx *cx, peer *p, uint64_t id, size_t n)
{
    const long before = atomic_load(&p->frames);
    atomic_store(&p->next_id, (long)id);
    send_frame(cx, cx->cli, p, id, n);
    wait_frames(cx, p, before + 1);
    assert_int_equal(atomic_load(&p->bad), 0);
}

/* ---- stream tests (each runs on tcp and ipc) ----------------------------------------- */

static void t_echo(const aims_transport *t)
{
    ctx cx;
    cx_start(&cx, t, MODE_ECHO, (uint64_t)64 << 20);
    peer *p = dial(&cx, 0);
    echo_check(&cx, p, 1, 100);
    echo_check(&cx, p, 2, 0);
    echo_check(&cx, p, 3, (size_t)8 << 20);
    echo_check(&cx, p, 4, 64);
    assert_int_equal(atomic_load(&cx.sp[0].bad), 0);
    t->close(cx.cli, p->conn);
    cx_stop(&cx);
}

static void t_pipeline(const aims_transport *t)
{
    ctx cx;
    cx_start(&cx, t, MODE_ECHO, (uint64_t)64 << 20);
    peer *p = dial(&cx, 0);
    const long n = 3000;
    for (long i = 0; i < n; i++) {
        send_frame(&cx, cx.cli, p, (uint64_t)i, (size_t)(i % 700));
    }
    wait_frames(&cx, p, n);
    assert_int_equal(atomic_load(&p->bad), 0);
    assert_int_equal(atomic_load(&cx.sp[0].bad), 0);
    assert_int_equal(atomic_load(&cx.sp[0].frames), n);
    cx_stop(&cx);
}

typedef struct sender_arg {
    ctx *cx;
    peer *p;
    long n;
    size_t size;
    atomic_int stop;
    long sent;
} sender_arg;

static void *sender_main(void *arg)
{
    sender_arg *a = arg;
    for (long i = 0; i < a->n && !atomic_load(&a->stop); i++) {
        size_t len = 0;
        void *f = make_frame((uint64_t)i, a->size, &len);
        if (f == NULL) {
            break;
        }
        const aims_status rc = a->cx->t->send(a->cx->cli, a->p->conn, f, len);
        if (rc == AIMS_E_OVERLOADED) {
            const struct timespec ts = {0, 200000};
            nanosleep(&ts, NULL);
            i--;
            continue;
        }
        if (rc != AIMS_OK) {
            break;
        }
        a->sent++;
    }
    return NULL;
}

static void t_many_conns(const aims_transport *t)
{
    ctx cx;
    cx_start(&cx, t, MODE_ECHO, (uint64_t)64 << 20);
    enum { NC = 6 };
    pthread_t th[NC];
    sender_arg sa[NC];
    for (int i = 0; i < NC; i++) {
        memset(&sa[i], 0, sizeof sa[i]);
        sa[i].cx = &cx;
        sa[i].p = dial(&cx, i);
        sa[i].n = 400;
        sa[i].size = (size_t)(i * 1000);
    }
    for (int i = 0; i < NC; i++) {
        assert_int_equal(pthread_create(&th[i], NULL, sender_main, &sa[i]), 0);
    }
    for (int i = 0; i < NC; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(sa[i].sent, 400);
    }
    for (int i = 0; i < NC; i++) {
        wait_frames(&cx, &cx.cp[i], 400);
        assert_int_equal(atomic_load(&cx.cp[i].bad), 0);
    }
    cx_stop(&cx);
}

static void t_oversize(const aims_transport *t)
{
    ctx cx;
    cx_start(&cx, t, MODE_ECHO, 4096);
    peer *a = dial(&cx, 0);
    peer *b = dial(&cx, 1);
    echo_check(&cx, a, 1, 10);
    echo_check(&cx, b, 1, 10);
    send_frame(&cx, cx.cli, a, 2, 8192); /* over the server's max_frame */
    assert_true(wait_for(&cx, pred_closed, &cx.sp[0]));
    assert_int_equal(atomic_load(&cx.sp[0].why), AIMS_E_RANGE);
    assert_true(wait_for(&cx, pred_closed, a)); /* the server shut it */
    assert_int_equal(atomic_load(&cx.sp[1].closed), 0);
    echo_check(&cx, b, 2, 100);
    echo_check(&cx, b, 3, 4000);
    /* a send on the dead connection fails cleanly */
    size_t len = 0;
    void *f = make_frame(9, 10, &len);
    const aims_status rc = t->send(cx.cli, a->conn, f, len);
    assert_true(rc == AIMS_E_CLOSED || rc == AIMS_E_IO);
    t->close(cx.srv, cx.sp[0].conn);
    t->close(cx.cli, a->conn);
    cx_stop(&cx);
}

static void t_garbage(const aims_transport *t)
{
    ctx cx;
    cx_start(&cx, t, MODE_ECHO, (uint64_t)64 << 20);
    peer *b = dial(&cx, 0);
    echo_check(&cx, b, 1, 10);
    const int fd = raw_connect(&cx);
    wait_accepted(&cx, 2);
    char junk[100];
    for (size_t i = 0; i < sizeof junk; i++) {
        junk[i] = (char)(i * 37 + 5);
    }
    assert_int_equal(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
    assert_true(wait_for(&cx, pred_closed, &cx.sp[1]));
    assert_int_equal(atomic_load(&cx.sp[1].why), AIMS_E_CORRUPT);
    char tmp[16];
    assert_true(read(fd, tmp, sizeof tmp) <= 0); /* shut down by the server */
    close(fd);
    echo_check(&cx, b, 2, 300);
    assert_int_equal(atomic_load(&cx.sp[0].closed), 0);
    cx_stop(&cx);
}

static void t_slow_peer(const aims_transport *t)
{
    ctx cx;
    cx_start(&cx, t, MODE_ECHO, (uint64_t)64 << 20);
    peer *b = dial(&cx, 0);
    echo_check(&cx, b, 1, 10);
    const int fd = raw_connect(&cx); /* never reads */
    wait_accepted(&cx, 2);
    peer *s = &cx.sp[1];
    const size_t fsz = (size_t)64 << 10;
    aims_status rc = AIMS_OK;
    long sent = 0;
    const size_t base = aims_alloc_live();
    while (sent < 4000) {
        size_t len = 0;
        void *f = make_frame((uint64_t)sent, fsz, &len);
        assert_non_null(f);
        rc = t->send(cx.srv, s->conn, f, len);
        if (rc != AIMS_OK) {
            break;
        }
        sent++;
    }
    assert_int_equal(rc, AIMS_E_OVERLOADED);
    /* the queue holds at most 16 MiB + one frame: 64 KiB frames -> < 300 blocks */
    assert_true(aims_alloc_live() < base + 300);
    echo_check(&cx, b, 2, 1000); /* others unaffected */
    close(fd);
    cx_stop(&cx);
}

static void t_close_in_frame(const aims_transport *t)
{
    ctx cx;
    cx_start(&cx, t, MODE_CLOSE_IN_FRAME, (uint64_t)64 << 20);
    peer *p = dial(&cx, 0);
    for (int i = 0; i < 20; i++) {
        /* the server may close before the last sends: they then fail cleanly */
        size_t len = 0;
        void *f = make_frame((uint64_t)i, 50, &len);
        assert_non_null(f);
        const aims_status rc = t->send(cx.cli, p->conn, f, len);
        assert_true(rc == AIMS_OK || (i > 0 && (rc == AIMS_E_CLOSED || rc == AIMS_E_IO)));
    }
    assert_true(wait_for(&cx, pred_closed, p)); /* the server's close shut the socket */
    assert_int_equal(atomic_load(&cx.sp[0].frames), 1);
    assert_int_equal(atomic_load(&cx.sp[0].late_hook), 0);
    assert_int_equal(atomic_load(&cx.sp[0].closed), 0); /* no on_close after close() */
    cx_stop(&cx);
}

static void t_close_while_sending(const aims_transport *t)
{
    ctx cx;
    cx_start(&cx, t, MODE_COUNT, (uint64_t)64 << 20);
    peer *p = dial(&cx, 0);
    sender_arg sa;
    memset(&sa, 0, sizeof sa);
    sa.cx = &cx;
    sa.p = p;
    sa.n = 1000000;
    sa.size = 200;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, sender_main, &sa), 0);
    wait_accepted(&cx, 1);
    wait_frames(&cx, &cx.sp[0], 50);
    t->close(cx.srv, cx.sp[0].conn);
    atomic_store(&cx.sp[0].released, 1);
    const long frames = atomic_load(&cx.sp[0].frames);
    /* the sender sees its connection fail and stops by itself */
    pthread_join(th, NULL);
    assert_true(sa.sent < sa.n);
    assert_true(wait_for(&cx, pred_closed, p));
    assert_int_equal(atomic_load(&cx.sp[0].frames), frames);
    assert_int_equal(atomic_load(&cx.sp[0].late_hook), 0);
    /* the client side also closes from a foreign thread while nothing runs */
    t->close(cx.cli, p->conn);
    cx_stop(&cx);
}

static void t_destroy_open(const aims_transport *t)
{
    ctx cx;
    cx_start(&cx, t, MODE_ECHO, (uint64_t)64 << 20);
    for (int i = 0; i < 4; i++) {
        peer *p = dial(&cx, i);
        for (int k = 0; k < 20; k++) {
            send_frame(&cx, cx.cli, p, (uint64_t)k, 20000);
        }
    }
    wait_frames(&cx, &cx.cp[0], 1);
    cx_stop(&cx); /* no close(): destroy releases everything */
}

/* ---- wrappers: tcp and ipc ------------------------------------------------------------- */

#define BOTH(name)                                              \
    static void test_##name##_tcp(void **state)                 \
    {                                                           \
        (void)state;                                            \
        t_##name(aimsi_transport_tcp());                        \
    }                                                           \
    static void test_##name##_ipc(void **state)                 \
    {                                                           \
        (void)state;                                            \
        t_##name(aimsi_transport_ipc());                        \
    }

BOTH(echo)
BOTH(pipeline)
BOTH(many_conns)
BOTH(oversize)
BOTH(garbage)
BOTH(slow_peer)
BOTH(close_in_frame)
BOTH(close_while_sending)
BOTH(destroy_open)

/* ---- addresses ------------------------------------------------------------------------ */

static void test_listen_insecure(void **state)
{
    (void)state;
    const aims_transport *t = aimsi_transport_tcp();
    ctx cx;
    memset(&cx, 0, sizeof cx);
    aims_transport_hooks h;
    void *inst = NULL;
    assert_int_equal(t->create(t->factory_user, hooks_for(&cx, &h), 1 << 20, &inst), AIMS_OK);
    char bound[128];
    void *l = NULL;
    assert_int_equal(t->listen(inst, "tcp://0.0.0.0:0", 0, bound, sizeof bound, &l),
                     AIMS_E_INVAL);
    assert_non_null(strstr(aims_errmsg(), "INSECURE"));
    assert_int_equal(t->listen(inst, "tcp://10.1.2.3:0", 0, bound, sizeof bound, &l),
                     AIMS_E_INVAL);
    assert_int_equal(t->listen(inst, "tcp://example.com:0", 0, bound, sizeof bound, &l),
                     AIMS_E_INVAL);
    assert_int_equal(t->listen(inst, "tcp://127.0.0.1", 0, bound, sizeof bound, &l),
                     AIMS_E_INVAL);
    assert_int_equal(t->listen(inst, "tcp://127.0.0.1:70000", 0, bound, sizeof bound, &l),
                     AIMS_E_INVAL);
    assert_int_equal(t->listen(inst, "ipc:///tmp/x", 0, bound, sizeof bound, &l),
                     AIMS_E_INVAL);
    assert_int_equal(t->listen(inst, "tcp://localhost:0", 0, bound, sizeof bound, &l), AIMS_OK);
    assert_true(strncmp(bound, "tcp://127.0.0.1:", 16) == 0);
    assert_true(atoi(bound + 16) > 0);
    void *l6 = NULL;
    if (t->listen(inst, "tcp://[::1]:0", 0, bound, sizeof bound, &l6) == AIMS_OK) {
        assert_true(strncmp(bound, "tcp://[::1]:", 12) == 0); /* IPv6 loopback, if present */
        t->unlisten(inst, l6);
    }
    assert_int_equal(t->listen(inst, "tcp://[::]:0", 0, bound, sizeof bound, &l6), AIMS_E_INVAL);
    assert_int_equal(t->listen(inst, "tcp://localhost:0", 0, bound, sizeof bound, &l),
                     AIMS_OK); /* a second listener, then unlisten the first: both fine */
    t->unlisten(inst, l);
    assert_int_equal(t->listen(inst, "tcp://localhost:0", 0, bound, sizeof bound, &l), AIMS_OK);
    char small[8];
    void *l2 = NULL;
    assert_int_equal(t->listen(inst, "tcp://127.0.0.1:0", 0, small, sizeof small, &l2),
                     AIMS_E_RANGE);
    /* dial errors name the address */
    void *c = NULL;
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", atoi(bound + 16));
    t->unlisten(inst, l);
    assert_int_equal(t->dial(inst, url, &cx, &c), AIMS_E_IO);
    assert_non_null(strstr(aims_errmsg(), url));
    t->destroy(inst);
}

static void test_ipc_stale_and_exists(void **state)
{
    (void)state;
    const aims_transport *t = aimsi_transport_ipc();
    ctx cx;
    cx_start(&cx, t, MODE_ECHO, 1 << 20);
    /* somebody listens on the path: EXISTS */
    void *inst2 = NULL;
    aims_transport_hooks h;
    assert_int_equal(t->create(t->factory_user, hooks_for(&cx, &h), 1 << 20, &inst2), AIMS_OK);
    char bound[128];
    void *l2 = NULL;
    assert_int_equal(t->listen(inst2, cx.bound, 0, bound, sizeof bound, &l2), AIMS_E_EXISTS);
    /* a stale socket file left by a dead listener is taken over */
    char path[128];
    snprintf(path, sizeof path, "%s/x", cx.dir);
    const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    strcpy(a.sun_path, path);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    close(fd);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    char url[160];
    snprintf(url, sizeof url, "ipc://%s", path);
    assert_int_equal(t->listen(inst2, url, 0, bound, sizeof bound, &l2), AIMS_OK);
    assert_string_equal(bound, url);
    /* unlisten removes the path it created */
    t->unlisten(inst2, l2);
    assert_int_equal(stat(path, &st), -1);
    /* a regular file is never unlinked */
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fclose(fp);
    assert_int_equal(t->listen(inst2, url, 0, bound, sizeof bound, &l2), AIMS_E_EXISTS);
    assert_int_equal(stat(path, &st), 0);
    unlink(path);
    /* relative and too-long paths */
    assert_int_equal(t->listen(inst2, "ipc://rel/x", 0, bound, sizeof bound, &l2), AIMS_E_INVAL);
    char longu[300];
    memset(longu, 'a', sizeof longu);
    memcpy(longu, "ipc:///", 7);
    longu[sizeof longu - 1] = '\0';
    assert_int_equal(t->listen(inst2, longu, 0, bound, sizeof bound, &l2), AIMS_E_INVAL);
    t->destroy(inst2);
    /* destroy unlinks the listener's path too */
    t->destroy(cx.srv);
    assert_int_equal(stat(cx.bound + 6, &st), -1);
    t->destroy(cx.cli);
    rmdir(cx.dir);
    pthread_cond_destroy(&cx.cv);
    pthread_mutex_destroy(&cx.mu);
}

/* ---- the table ------------------------------------------------------------------------- */

static aims_status fake_create(void *fu, const aims_transport_hooks *h, uint64_t mf, void **out)
{
    (void)h;
    (void)mf;
    *out = fu;
    return AIMS_OK;
}
static void fake_destroy(void *inst)
{
    (*(int *)inst)++;
}
static aims_status fake_listen(void *i, const char *u, unsigned f, char *b, size_t bc, void **o)
{
    (void)i;
    (void)u;
    (void)f;
    (void)b;
    (void)bc;
    (void)o;
    return AIMS_E_UNSUPPORTED;
}
static void fake_unlisten(void *i, void *l)
{
    (void)i;
    (void)l;
}
static aims_status fake_dial(void *i, const char *u, void *cu, void **o)
{
    (void)i;
    (void)u;
    (void)cu;
    (void)o;
    return AIMS_E_UNSUPPORTED;
}
static aims_status fake_send(void *i, void *c, void *f, size_t l)
{
    (void)i;
    (void)c;
    (void)l;
    aims_free(f);
    return AIMS_OK;
}
static void fake_close(void *i, void *c)
{
    (void)i;
    (void)c;
}

static void test_ttable(void **state)
{
    (void)state;
    ctx cx;
    memset(&cx, 0, sizeof cx);
    aims_transport_hooks h;
    aimsi_ttable tt;
    aimsi_ttable_init(&tt, hooks_for(&cx, &h), 1 << 20);
    int destroyed = 0;
    aims_transport v = {sizeof v, AIMS_TRANSPORT_VERSION, "my+t.x-1", &destroyed, fake_create,
                        fake_destroy, fake_listen, fake_unlisten, fake_dial, fake_send,
                        fake_close};
    aims_transport bad = v;
    bad.struct_size = (uint32_t)offsetof(aims_transport, close);
    assert_int_equal(aimsi_ttable_add(&tt, &bad), AIMS_E_INVAL);
    bad = v;
    bad.version = AIMS_TRANSPORT_VERSION + 1;
    assert_int_equal(aimsi_ttable_add(&tt, &bad), AIMS_E_UNSUPPORTED);
    const char *bad_schemes[] = {"", "TCP", "a b", "abcdefghijklmnopq", "x:y", "inproc"};
    for (size_t i = 0; i < sizeof bad_schemes / sizeof bad_schemes[0]; i++) {
        bad = v;
        bad.scheme = bad_schemes[i];
        assert_int_equal(aimsi_ttable_add(&tt, &bad), AIMS_E_INVAL);
    }
    bad = v;
    bad.scheme = NULL;
    assert_int_equal(aimsi_ttable_add(&tt, &bad), AIMS_E_INVAL);
    for (int k = 0; k < 7; k++) {
        bad = v;
        switch (k) {
        case 0: bad.create = NULL; break;
        case 1: bad.destroy = NULL; break;
        case 2: bad.listen = NULL; break;
        case 3: bad.unlisten = NULL; break;
        case 4: bad.dial = NULL; break;
        case 5: bad.send = NULL; break;
        default: bad.close = NULL; break;
        }
        assert_int_equal(aimsi_ttable_add(&tt, &bad), AIMS_E_INVAL);
    }
    assert_int_equal(tt.n, 3); /* the built-ins: tcp, ipc, tls */
    /* a host compiled against exactly the version-1 size */
    aims_transport ok = v;
    ok.struct_size = (uint32_t)(offsetof(aims_transport, close) + sizeof(void (*)(void)));
    assert_int_equal(aimsi_ttable_add(&tt, &ok), AIMS_OK);
    assert_int_equal(tt.n, 4);
    aimsi_tslot *s = NULL;
    assert_int_equal(aimsi_ttable_get(&tt, "my+t.x-1://anything", &s), AIMS_OK);
    assert_ptr_equal(s->inst, &destroyed);
    assert_string_equal(s->vt.scheme, "my+t.x-1");
    /* in use: cannot be replaced */
    assert_int_equal(aimsi_ttable_add(&tt, &v), AIMS_E_STATE);
    assert_int_equal(aimsi_ttable_get(&tt, "inproc://x", &s), AIMS_E_UNSUPPORTED);
    assert_int_equal(aimsi_ttable_get(&tt, "nope://x", &s), AIMS_E_UNSUPPORTED);
    assert_int_equal(aimsi_ttable_get(&tt, "no-scheme", &s), AIMS_E_INVAL);
    assert_int_equal(aimsi_ttable_get(&tt, "tcp://127.0.0.1:1", &s), AIMS_OK);
    assert_ptr_equal(s->vt.send, aimsi_transport_tcp()->send);
    assert_non_null(s->inst);
    /* override a built-in before use */
    aims_transport ov = v;
    ov.scheme = "ipc";
    int destroyed2 = 0;
    ov.factory_user = &destroyed2;
    assert_int_equal(aimsi_ttable_add(&tt, &ov), AIMS_OK);
    assert_int_equal(tt.n, 4);
    /* tls:// without a config says what is missing */
    void *lst = NULL;
    assert_int_equal(aimsi_ttable_get(&tt, "tls://127.0.0.1:0", &s), AIMS_OK);
    assert_int_equal(s->vt.listen(s->inst, "tls://127.0.0.1:0", 0, NULL, 0, &lst), AIMS_E_STATE);
    assert_non_null(strstr(aims_errmsg(), "aims_node_set_tls"));
    assert_int_equal(aimsi_ttable_get(&tt, "ipc:///tmp/whatever", &s), AIMS_OK);
    assert_ptr_equal(s->inst, &destroyed2);
    aimsi_ttable_fini(&tt);
    assert_int_equal(destroyed, 1);
    assert_int_equal(destroyed2, 1);
    /* url_split */
    char sch[17];
    const char *rest = NULL;
    assert_int_equal(aimsi_url_split("tcp://a:1", sch, sizeof sch, &rest), AIMS_OK);
    assert_string_equal(sch, "tcp");
    assert_string_equal(rest, "a:1");
    assert_int_equal(aimsi_url_split("tcp:/a", sch, sizeof sch, &rest), AIMS_E_INVAL);
    assert_int_equal(aimsi_url_split("://a", sch, sizeof sch, &rest), AIMS_E_INVAL);
    assert_int_equal(aimsi_url_split("tcp://a", sch, 3, &rest), AIMS_E_RANGE);
    const aims_transport *b1 = aimsi_transport_tcp();
    assert_int_equal(b1->struct_size, sizeof(aims_transport));
    assert_int_equal(b1->version, AIMS_TRANSPORT_VERSION);
}

/* ---- allocation failures ------------------------------------------------------------------ */

static aims_status fail_op(void *arg)
{
    const aims_transport *t = arg;
    ctx *cx = calloc(1, sizeof *cx);
    assert_non_null(cx);
    cx->t = t;
    cx->mode = MODE_ECHO;
    pthread_mutex_init(&cx->mu, NULL);
    pthread_cond_init(&cx->cv, NULL);
    strcpy(cx->dir, "/tmp/aims-tf-XXXXXX");
    assert_non_null(mkdtemp(cx->dir));
    aims_transport_hooks h;
    char url[128];
    aims_status rc = t->create(t->factory_user, hooks_for(cx, &h), 1 << 20, &cx->srv);
    if (rc == AIMS_OK) {
        rc = t->create(t->factory_user, hooks_for(cx, &h), 1 << 20, &cx->cli);
        if (rc == AIMS_OK) {
            rc = t->listen(cx->srv, listen_url(cx, url, sizeof url), 0, cx->bound,
                           sizeof cx->bound, &cx->listener);
            if (rc == AIMS_OK) {
                cx->cp[0].cx = cx;
                rc = t->dial(cx->cli, cx->bound, &cx->cp[0], &cx->cp[0].conn);
            }
            if (rc == AIMS_OK) {
                size_t len = 0;
                void *f = make_frame(0, 100, &len);
                rc = (f == NULL) ? AIMS_E_NOMEM : t->send(cx->cli, cx->cp[0].conn, f, len);
            }
            /* A failure injected into the server's accept (on its I/O thread)
             * makes it drop the connection: the client then sees it closed. */
            if ((rc == AIMS_E_CLOSED || rc == AIMS_E_IO) && ta_failed()) {
                rc = AIMS_E_NOMEM;
            }
            if (rc == AIMS_OK) {
                t->close(cx->cli, cx->cp[0].conn);
            }
            t->destroy(cx->cli);
        }
        t->destroy(cx->srv);
    }
    char path[160];
    snprintf(path, sizeof path, "%s/s.sock", cx->dir);
    unlink(path);
    rmdir(cx->dir);
    pthread_cond_destroy(&cx->cv);
    pthread_mutex_destroy(&cx->mu);
    free(cx);
    return rc;
}

static void test_alloc_fail_tcp(void **state)
{
    (void)state;
    ta_fail_loop("tcp create+listen+dial+send+destroy", fail_op, (void *)aimsi_transport_tcp());
}

static void test_alloc_fail_ipc(void **state)
{
    (void)state;
    ta_fail_loop("ipc create+listen+dial+send+destroy", fail_op, (void *)aimsi_transport_ipc());
}

#define T(x) cmocka_unit_test_setup_teardown(x, ta_setup, ta_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_echo_tcp),
        T(test_echo_ipc),
        T(test_pipeline_tcp),
        T(test_pipeline_ipc),
        T(test_many_conns_tcp),
        T(test_many_conns_ipc),
        T(test_oversize_tcp),
        T(test_oversize_ipc),
        T(test_garbage_tcp),
        T(test_garbage_ipc),
        T(test_slow_peer_tcp),
        T(test_slow_peer_ipc),
        T(test_close_in_frame_tcp),
        T(test_close_in_frame_ipc),
        T(test_close_while_sending_tcp),
        T(test_close_while_sending_ipc),
        T(test_destroy_open_tcp),
        T(test_destroy_open_ipc),
        T(test_listen_insecure),
        T(test_ipc_stale_and_exists),
        T(test_ttable),
        T(test_alloc_fail_tcp),
        T(test_alloc_fail_ipc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
