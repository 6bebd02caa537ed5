/*
 * node_mpi.c -- `aims-node --train-mpi` (docs/MPI.md "As a train service"):
 *
 *   mpirun -np N aims-node --train-mpi --train NAME [--train-store DIR] ...
 *
 * Rank 0 is the ordinary daemon: its --train services run every job on all
 * N ranks (aims_service_set_mpi), it listens, registers, prints "ready" and
 * stops on SIGTERM/SIGINT. Ranks 1..N-1 are followers: they listen on
 * nothing, register nothing, print nothing on stdout, and leave when rank 0
 * says so (aims_follow_mpi / aims_stop_mpi_followers) -- so they keep the
 * daemon's signal set-up (a SIGTERM only lands in the unread self-pipe): the
 * decision to stop is rank 0's, whatever signals mpirun forwards; a follower
 * is only ever ended by rank 0's STOP or by mpirun ending the MPI job.
 *
 * Every rank asks for SIGKILL when its parent (mpirun) dies: a follower left
 * without its launcher would wait for rank 0 forever (in a shared-memory
 * broadcast nobody will ever answer), and a rank 0 without followers would
 * hang in its next job's first step.
 */
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <aims/aims_dist.h>
#include <aims/aims_train_mpi.h>

#include "node_log.h"
#include "node_mpi.h"

static int g_mpi_on; /* rank 0 started MPI and has not finished it */

int node_mpi_init(int *rank, int *size)
{
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (aims_init_mpi(rank, size) != AIMS_OK) {
        fprintf(stderr, "aims-node: --train-mpi: %s\n", aims_errmsg());
        return -1;
    }
    g_mpi_on = *rank == 0;
    nlog(AIMS_LOG_INFO, "--train-mpi: rank %d of %d, pid %ld%s", *rank, *size, (long)getpid(),
         *rank == 0 ? " (hosts the services)" : " (follows rank 0)");
    return 0;
}

int node_mpi_follow(int rank)
{
    const aims_status rc = aims_follow_mpi();
    if (rc != AIMS_OK) {
        nlog(AIMS_LOG_ERROR, "--train-mpi: rank %d leaves: %s: %s", rank, aims_strerror(rc),
             aims_errmsg());
    }
    if (aims_finalize_mpi() != AIMS_OK) {
        nlog(AIMS_LOG_ERROR, "--train-mpi: rank %d: %s", rank, aims_errmsg());
    }
    return rc == AIMS_OK ? 0 : 1;
}

void node_mpi_finish(void)
{
    if (!g_mpi_on) {
        return;
    }
    g_mpi_on = 0;
    if (aims_stop_mpi_followers() != AIMS_OK) {
        nlog(AIMS_LOG_ERROR, "--train-mpi: stopping the follower ranks: %s", aims_errmsg());
    }
    if (aims_finalize_mpi() != AIMS_OK) {
        nlog(AIMS_LOG_ERROR, "--train-mpi: %s", aims_errmsg());
    }
}
