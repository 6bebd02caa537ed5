/*
 * train_mpi.c -- the one file of libaims that includes <mpi.h> (meson
 * feature `mpi`, Debian's Open MPI): aims_init_mpi, aims_finalize_mpi,
 * aims_trainer_set_mpi, and the MPI exchange behind data-parallel training
 * (aimsi_dist.h; the shard logic and the fixed summation order live in
 * train_shard.c, which knows no MPI). Built without MPI, the same three calls
 * return AIMS_E_UNSUPPORTED with "built without MPI".
 *
 * How. aims_trainer_set_mpi duplicates MPI_COMM_WORLD, so libaims' traffic
 * never mixes with the host's and errors on it return (MPI_ERRORS_RETURN)
 * instead of aborting the process -- the library never aborts. A step moves
 * every rank's block (its shard's loss and partial gradient) to every rank
 * with one MPI_Allgather in place; MPI only moves bytes (MPI_BYTE), it never
 * adds floats, so no MPI reduction order can creep into the result: each rank
 * sums the blocks itself in rank order (train_shard.c). An allgather moves
 * (S - 1) x n_params floats into each rank, the same volume as a ring
 * all-reduce's two phases for S = 2 and more for larger S; a reduce-scatter of
 * slices summed in rank order followed by an allgather of the sums would cut
 * that for many ranks with the same bits (left for when S > 4 matters).
 *
 * Process-wide state. MPI is process-wide by nature; libaims keeps one flag
 * beside it, "aims_init_mpi started MPI", so aims_finalize_mpi finalizes only
 * what it started and a host that runs MPI itself keeps control of it; and
 * the command channel of an MPI train service (aimsi_mpi.h: broadcast and
 * agreement on a duplicate of MPI_COMM_WORLD made at first use, freed by
 * aims_finalize_mpi).
 *
 * Threads. aims_init_mpi asks for MPI_THREAD_SERIALIZED: MPI calls are made
 * one at a time, but not always from the thread that started MPI -- a train
 * service steps its trainers on its job thread (docs/MPI.md "As a train
 * service"), while the host's main thread starts and finalizes MPI.
 */
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>

#include "aimsi_dist.h"
#include "aimsi_mpi.h"
#include "aimsi_train.h"

#ifdef AIMS_HAVE_MPI

#include <mpi.h>
#include <pthread.h>

static atomic_int g_started; /* aims_init_mpi called MPI_Init_thread */

/* The command channel (aimsi_mpi.h): created at first use, under g_chan_mu. */
static pthread_mutex_t g_chan_mu = PTHREAD_MUTEX_INITIALIZER;
static MPI_Comm g_chan = MPI_COMM_NULL;

static void mpi_text(int code, char *buf, size_t cap)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(code, msg, &len) != MPI_SUCCESS) {
        snprintf(buf, cap, "MPI error %d", code);
        return;
    }
    snprintf(buf, cap, "%.*s", len, msg);
}

static aims_status mpi_fail(aimsi_obj *obj, int code, const char *what)
{
    char msg[MPI_MAX_ERROR_STRING];
    mpi_text(code, msg, sizeof msg);
    return aimsi_err(obj, AIMS_E_BACKEND, "%s: %s", what, msg);
}

aims_status aims_init_mpi(int *out_rank, int *out_size)
{
    int init = 0;
    int fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (fin) {
        return aimsi_err(NULL, AIMS_E_BACKEND, "aims_init_mpi: MPI was already finalized in "
                                               "this process (it cannot start twice)");
    }
    if (!init) {
        int provided = 0;
        const int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided);
        if (rc != MPI_SUCCESS) {
            return mpi_fail(NULL, rc, "aims_init_mpi: MPI_Init_thread");
        }
        atomic_store(&g_started, 1);
    }
    int rank = 0;
    int size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (out_rank != NULL) {
        *out_rank = rank;
    }
    if (out_size != NULL) {
        *out_size = size;
    }
    return AIMS_OK;
}

aims_status aims_finalize_mpi(void)
{
    int fin = 0;
    MPI_Finalized(&fin);
    if (fin) {
        return AIMS_OK; /* already finalized (the channel went with MPI) */
    }
    pthread_mutex_lock(&g_chan_mu);
    if (g_chan != MPI_COMM_NULL) {
        MPI_Comm_free(&g_chan); /* collective, like the finalize below */
        g_chan = MPI_COMM_NULL;
    }
    pthread_mutex_unlock(&g_chan_mu);
    if (atomic_exchange(&g_started, 0) == 0) {
        return AIMS_OK; /* never started by libaims */
    }
    const int rc = MPI_Finalize();
    return rc == MPI_SUCCESS ? AIMS_OK : mpi_fail(NULL, rc, "aims_finalize_mpi: MPI_Finalize");
}

typedef struct mpi_dist {
    aimsi_dist base; /* first: the hook is cast back */
    MPI_Comm comm;   /* a duplicate of MPI_COMM_WORLD, errors returned */
} mpi_dist;

static aims_status mpi_exchange(aimsi_dist *d, void *all, size_t blk, char *err, size_t err_cap)
{
    mpi_dist *md = (mpi_dist *)d;
    if (blk > (size_t)INT_MAX) {
        snprintf(err, err_cap, "%zu-byte gradient blocks exceed MPI's int count", blk);
        return AIMS_E_RANGE;
    }
    const int rc =
        MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, all, (int)blk, MPI_BYTE, md->comm);
    if (rc != MPI_SUCCESS) {
        mpi_text(rc, err, err_cap);
        return AIMS_E_BACKEND;
    }
    return AIMS_OK;
}

static void mpi_destroy(aimsi_dist *d)
{
    mpi_dist *md = (mpi_dist *)d;
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) { /* after MPI_Finalize the communicator is gone with MPI */
        MPI_Comm_free(&md->comm);
    }
    aimsi_free(md);
}

aims_status aims_trainer_set_mpi(aims_trainer *t, int enable)
{
    if (!TRAINER_OK(t)) {
        return AIMSI_MISUSE("t is not a valid aims_trainer handle");
    }
    if (t->running) {
        return aimsi_err(&t->obj, AIMS_E_STATE,
                         "aims_trainer_set_mpi: a run is in progress (begin a new one)");
    }
    if (!enable) {
        return aimsi_train_set_dist(t, NULL);
    }
    int init = 0;
    int fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (!init || fin) {
        return aimsi_err(&t->obj, AIMS_E_STATE,
                         "aims_trainer_set_mpi: MPI is %s (call aims_init_mpi first)",
                         fin ? "finalized" : "not initialized");
    }
    mpi_dist *md = aimsi_calloc(1, sizeof *md);
    if (md == NULL) {
        return aimsi_err(&t->obj, AIMS_E_NOMEM, "aims_trainer_set_mpi: out of memory");
    }
    int rc = MPI_Comm_dup(MPI_COMM_WORLD, &md->comm);
    if (rc != MPI_SUCCESS) {
        aimsi_free(md);
        return mpi_fail(&t->obj, rc, "aims_trainer_set_mpi: MPI_Comm_dup");
    }
    MPI_Comm_set_errhandler(md->comm, MPI_ERRORS_RETURN);
    int rank = 0;
    int size = 1;
    MPI_Comm_rank(md->comm, &rank);
    MPI_Comm_size(md->comm, &size);
    md->base.rank = rank;
    md->base.size = size;
    md->base.exchange = mpi_exchange;
    md->base.destroy = mpi_destroy;
    const aims_status st = aimsi_train_set_dist(t, &md->base);
    if (st != AIMS_OK) {
        mpi_destroy(&md->base);
    }
    return st;
}

/* ---- the command channel of an MPI train service (aimsi_mpi.h) ---- */

aims_status aimsi_mpi_world(int *rank, int *size)
{
    int init = 0;
    int fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (!init || fin) {
        return aimsi_err(NULL, AIMS_E_STATE, "MPI is %s (call aims_init_mpi first)",
                         fin ? "finalized" : "not initialized");
    }
    MPI_Comm_rank(MPI_COMM_WORLD, rank);
    MPI_Comm_size(MPI_COMM_WORLD, size);
    return AIMS_OK;
}

static aims_status chan(MPI_Comm *out)
{
    int r = 0;
    int n = 0;
    AIMSI_TRY(aimsi_mpi_world(&r, &n));
    pthread_mutex_lock(&g_chan_mu);
    int rc = MPI_SUCCESS;
    if (g_chan == MPI_COMM_NULL) {
        rc = MPI_Comm_dup(MPI_COMM_WORLD, &g_chan);
        if (rc == MPI_SUCCESS) {
            MPI_Comm_set_errhandler(g_chan, MPI_ERRORS_RETURN);
        } else {
            g_chan = MPI_COMM_NULL;
        }
    }
    *out = g_chan;
    pthread_mutex_unlock(&g_chan_mu);
    return rc == MPI_SUCCESS ? AIMS_OK : mpi_fail(NULL, rc, "MPI command channel: MPI_Comm_dup");
}

aims_status aimsi_mpi_bcast(void *buf, size_t len)
{
    MPI_Comm c = MPI_COMM_NULL;
    AIMSI_TRY(chan(&c));
    const size_t piece = (size_t)1 << 30;
    for (size_t off = 0; off < len; off += piece) {
        const size_t n = len - off < piece ? len - off : piece;
        const int rc = MPI_Bcast((char *)buf + off, (int)n, MPI_BYTE, 0, c);
        if (rc != MPI_SUCCESS) {
            return mpi_fail(NULL, rc, "MPI command channel: MPI_Bcast");
        }
    }
    return AIMS_OK;
}

aims_status aimsi_mpi_agree(int ok, int *all_ok)
{
    MPI_Comm c = MPI_COMM_NULL;
    AIMSI_TRY(chan(&c));
    int mine = ok != 0;
    int all = 0;
    const int rc = MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, c);
    if (rc != MPI_SUCCESS) {
        return mpi_fail(NULL, rc, "MPI command channel: MPI_Allreduce");
    }
    *all_ok = all;
    return AIMS_OK;
}

#else /* built without MPI */

static aims_status no_mpi(aimsi_obj *obj, const char *fn)
{
    return aimsi_err(obj, AIMS_E_UNSUPPORTED,
                     "%s: libaims was built without MPI (meson -Dmpi=enabled needs Open MPI: "
                     "apt-get install libopenmpi-dev openmpi-bin)",
                     fn);
}

aims_status aims_init_mpi(int *out_rank, int *out_size)
{
    (void)out_rank;
    (void)out_size;
    return no_mpi(NULL, "aims_init_mpi");
}

aims_status aims_finalize_mpi(void)
{
    return no_mpi(NULL, "aims_finalize_mpi");
}

aims_status aims_trainer_set_mpi(aims_trainer *t, int enable)
{
    if (!TRAINER_OK(t)) {
        return AIMSI_MISUSE("t is not a valid aims_trainer handle");
    }
    if (!enable || t->running) {
        return aimsi_train_set_dist(t, NULL); /* detach, or AIMS_E_STATE while running */
    }
    return no_mpi(&t->obj, "aims_trainer_set_mpi");
}

aims_status aimsi_mpi_world(int *rank, int *size)
{
    (void)rank;
    (void)size;
    return no_mpi(NULL, "--train-mpi / aims_service_set_mpi");
}

aims_status aimsi_mpi_bcast(void *buf, size_t len)
{
    (void)buf;
    (void)len;
    return no_mpi(NULL, "aimsi_mpi_bcast");
}

aims_status aimsi_mpi_agree(int ok, int *all_ok)
{
    (void)ok;
    (void)all_ok;
    return no_mpi(NULL, "aimsi_mpi_agree");
}

#endif /* AIMS_HAVE_MPI */
