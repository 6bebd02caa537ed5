/*
 * aimsi_dist.h -- the exchange hook of data-parallel training (aims_dist.h):
 * how train_shard.c, which knows no MPI, hands the partial gradients of a
 * step to whatever carries them between processes. train_mpi.c (the only
 * file that includes <mpi.h>) implements it over an MPI communicator; the
 * unit tests implement it over threads and a barrier. Private to src/model.
 */
#ifndef AIMSI_DIST_H
#define AIMSI_DIST_H

#include <stddef.h>

#include "aims/aims_dist.h"

typedef struct aimsi_dist aimsi_dist;

struct aimsi_dist {
    int rank, size; /* this process's shard, and the shard count */
    /*
     * Collective: `all` holds size blocks of blk bytes; on entry block `rank`
     * (at all + rank * blk) holds this rank's data, on return every block
     * holds its rank's data. On failure writes a message into err.
     */
    aims_status (*exchange)(aimsi_dist *d, void *all, size_t blk, char *err, size_t err_cap);
    void (*destroy)(aimsi_dist *d); /* releases d itself; may be NULL */
};

/* train_shard.c: give the trainer its exchange (NULL: detach; the trainer
 * owns d from here and destroys it with itself or on the next attach).
 * AIMS_E_STATE while a run is in progress. */
aims_status aimsi_train_set_dist(aims_trainer *t, aimsi_dist *d);

#endif /* AIMSI_DIST_H */
