/*
 * aimsi_mpi.h -- the command channel of an MPI train service (aims_train_mpi.h,
 * src/svc/svc_train_mpi.c): the few collective calls the service layer needs
 * besides the trainer's gradient exchange, implemented in train_mpi.c (the
 * one file that includes <mpi.h>) so that MPI stays behind one file.
 *
 * The channel is a duplicate of MPI_COMM_WORLD made at its first use
 * (collective: every rank's first channel call is its first use) with errors
 * returned, never fatal; aims_finalize_mpi frees it. Every call is collective
 * over MPI_COMM_WORLD and must be made by every rank in the same order.
 * Built without MPI each returns AIMS_E_UNSUPPORTED ("built without MPI").
 */
#ifndef AIMSI_MPI_H
#define AIMSI_MPI_H

#include <stddef.h>

#include "aims/aims_model.h"

/* This process's rank and the world size; AIMS_E_STATE when MPI is not
 * initialized (call aims_init_mpi) or already finalized. Not collective. */
aims_status aimsi_mpi_world(int *rank, int *size);
/* Rank 0's len bytes at buf to every rank's buf (any length: sent in
 * pieces below INT_MAX). AIMS_E_BACKEND with MPI's text on failure. */
aims_status aimsi_mpi_bcast(void *buf, size_t len);
/* *all_ok = 1 when every rank passed ok != 0, else 0 (one MPI_Allreduce). */
aims_status aimsi_mpi_agree(int ok, int *all_ok);

/* train_shard.c: this rank leaves a data-parallel run between steps (MPI or
 * not): one exchange carrying only its stop word, so every other rank's
 * current step returns AIMS_E_CANCELLED; the trainer's own step is not taken
 * and its error text is untouched. A no-op when the run is not sharded over
 * an exchange, not running, done, diverged, or already stopped alike. */
void aimsi_train_dist_leave(aims_trainer *t);

#endif /* AIMSI_MPI_H */
