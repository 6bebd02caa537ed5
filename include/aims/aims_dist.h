/*
 * aims_dist.h -- data-parallel training: one global mini-batch cut into
 * shards, the shards' gradients computed by several processes (Open MPI) and
 * summed in a fixed order, so N processes train the same model bytes as one
 * (docs/MPI.md).
 *
 * Why: a dense model trained on more data than one process can chew through
 * in time wants more machines, yet a result that changes with the number of
 * machines cannot be checked, reproduced or resumed elsewhere. Floating-point
 * sums are not associative, so "the same global batch" is not enough: the
 * order of every sum must be fixed too.
 *
 * How: with S shards every mini-batch of n rows (the same rows, in the same
 * order, on every process: the epoch's shuffle is a pure function of the
 * seed) is cut into S contiguous shards, shard s holding rows
 * [n s / S, n (s + 1) / S). Shard s's forward pass, loss gradient
 * (normalized by the GLOBAL batch n) and backward pass give its partial
 * gradient g_s; the step's gradient is ((g_0 + g_1) + g_2) + ... -- shard
 * order, empty shards skipped -- and then the optimizer updates the weights
 * once. aims_trainer_set_shards() makes ONE process do exactly that (every
 * shard in turn); aims_trainer_set_mpi() makes rank r of S MPI processes
 * compute shard r only and exchange the partial gradients (MPI_Allgather),
 * after which every rank sums them in the same rank order. Both run the same
 * code on the same rows with the same sums, so the weights after every step
 * are bit-identical (given the same AIMS_TRAIN_THREADS and GEMM back end on
 * every process; libaims' own kernels (AVX-512, AVX2) do not depend on the thread
 * count). Dropout masks are salted with the shard number.
 *
 * A run with S > 1 shards is NOT bit-identical to the same run with one
 * shard (that one sums the batch's rows inside one GEMM): the reference for
 * an S-rank MPI run is the one-process run with aims_trainer_set_shards(t, S).
 *
 * Threads and collectives: every MPI rank must make the same trainer calls
 * in the same order (set_mpi, begin, step/epoch/fit, destroy), because every
 * step is a collective operation. Stopping one rank only (cancel, a progress
 * callback returning non-zero) leaves the others waiting in the next step:
 * stop all ranks alike (the loss, validation figures and the epoch counter
 * are the same on every rank, so a rule based on them decides alike). A
 * cancel is carried alike for you: with aims_trainer_set_mpi, a cancel on
 * any rank (aims_trainer_cancel, or a progress callback returning non-zero,
 * which then cancels the next step) rides the next step's gradient exchange,
 * and that step returns AIMS_E_CANCELLED on EVERY rank, nothing applied;
 * later steps of the run return it at once, without an exchange. MPI is
 * called one call at a time from the thread that steps the trainer
 * (MPI_THREAD_SERIALIZED: it need not be the thread that started MPI).
 */
/** @file */
#ifndef AIMS_DIST_H
#define AIMS_DIST_H

#include "aims_model.h"

AIMS_EXTERN_C_BEGIN

/**
 * @brief Start MPI for this process (if the host has not already) and say
 * which rank of how many it is in MPI_COMM_WORLD.
 *
 * Calls MPI_Init_thread (MPI_THREAD_SERIALIZED) unless MPI is already
 * initialized; a host that initializes MPI itself may skip this call.
 * Launch the processes with mpirun (e.g. `mpirun -np 4 ./host`); a process
 * started without mpirun is a world of one (rank 0 of 1).
 *
 * @param out_rank [out] this process's rank in MPI_COMM_WORLD; may be NULL.
 * @param out_size [out] the number of processes; may be NULL.
 * @return AIMS_OK; AIMS_E_UNSUPPORTED when libaims was built without MPI
 *         (meson -Dmpi=disabled, or no Open MPI development files at build
 *         time; aims_errmsg() says so); AIMS_E_BACKEND when MPI fails to
 *         start or was already finalized. Outputs untouched on failure.
 * @note Thread safety: start-up only, from the thread that will step the
 *       trainers. MPI is process-wide state: libaims only remembers whether
 *       it started MPI, so aims_finalize_mpi() stops only what it started.
 * @since 0.1
 */
AIMS_API aims_status aims_init_mpi(int *out_rank, int *out_size);

/**
 * @brief Finalize MPI if aims_init_mpi() initialized it; otherwise (the host
 * owns MPI, or it was never started) do nothing.
 *
 * Destroy every trainer set with aims_trainer_set_mpi() first (each holds a
 * duplicated communicator that must be freed before MPI_Finalize).
 * @return AIMS_OK; AIMS_E_UNSUPPORTED when built without MPI;
 *         AIMS_E_BACKEND when MPI_Finalize fails.
 * @note Thread safety: shut-down only; collective over MPI_COMM_WORLD.
 * @since 0.1
 */
AIMS_API aims_status aims_finalize_mpi(void);

/**
 * @brief Cut every mini-batch into @p shards shards and compute them one
 * after the other in this process, summing their gradients in shard order.
 *
 * This is the one-process reference of an MPI run over @p shards ranks: the
 * trained model is bit-identical to that run's (see the file overview).
 * One shard (the default) is the ordinary trainer. Takes effect at the next
 * aims_trainer_begin(); dense models only (a TEXT model's begin fails with
 * AIMS_E_UNSUPPORTED). The shard count is part of a checkpoint's
 * fingerprint, so a checkpoint resumes only with the same count.
 * Undoes aims_trainer_set_mpi().
 *
 * @param t      The trainer; must not be running (else AIMS_E_STATE).
 * @param shards 1 .. 4096 (else AIMS_E_INVAL).
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_INVAL, AIMS_E_STATE.
 * @note Thread safety: like the other trainer setters (the trainer's owner).
 * @since 0.1
 */
AIMS_API aims_status aims_trainer_set_shards(aims_trainer *t, int shards);

/**
 * @brief Train data-parallel over the ranks of MPI_COMM_WORLD: the shard
 * count becomes the world size and this process computes the shard of its
 * rank; partial gradients are exchanged with MPI_Allgather at every step.
 *
 * Every rank must call this (it duplicates MPI_COMM_WORLD, a collective
 * call) and then train on the same data with the same parameters; every rank
 * ends with the same weights, so one of them (rank 0 by convention) saves the
 * model. MPI must be initialized (aims_init_mpi() or the host).
 * MPI errors on the duplicated communicator return AIMS_E_BACKEND from the
 * step (with MPI's error text) instead of aborting the process.
 *
 * @param t      The trainer; must not be running (else AIMS_E_STATE).
 * @param enable Non-zero: attach to MPI; 0: detach (back to one shard).
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_STATE (MPI not initialized, or a
 *         run in progress), AIMS_E_UNSUPPORTED (built without MPI),
 *         AIMS_E_BACKEND (the communicator could not be duplicated),
 *         AIMS_E_NOMEM.
 * @note Thread safety: from the thread that steps the trainer (MPI is used
 *       one call at a time; MPI_THREAD_SERIALIZED or more).
 * @since 0.1
 */
AIMS_API aims_status aims_trainer_set_mpi(aims_trainer *t, int enable);

AIMS_EXTERN_C_END

#endif /* AIMS_DIST_H */
