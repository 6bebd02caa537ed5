/*
 * aims_train_mpi.h -- a train service that trains every job on all the ranks
 * of an MPI job: data-parallel training (aims_dist.h) as a service
 * (docs/MPI.md "As a train service"; the daemon's `aims-node --train-mpi`).
 *
 * Why: aims_dist.h makes N processes train one model as one process would,
 * but only for a host that drives every rank itself. A train service accepts
 * jobs over the network one after another; these calls let one MPI job of N
 * processes serve them: rank 0 is the ordinary train service (it registers,
 * accepts submits, checkpoints, publishes, answers status), ranks 1..N-1 are
 * followers that register nothing and listen on nothing.
 *
 * How: when rank 0's job thread starts a job it broadcasts the job's recipe
 * -- job id, the submit's spec text, and the rows (features and labels, from
 * the request or from the store when the submit named its data by
 * reference) -- over a command channel (a duplicate of MPI_COMM_WORLD).
 * Every follower builds the same dataset, model and trainer from it with the
 * same code the service uses, and every rank agrees (one MPI_Allreduce)
 * before going on, so a rank that cannot build the job makes the job fail on
 * rank 0 instead of hanging the others. Then all ranks call
 * aims_trainer_set_mpi and aims_trainer_begin; rank 0 resumes from its newest
 * checkpoint when the job has one and broadcasts its trainer state (the
 * exact-resume checkpoint bytes), which every follower restores, so all ranks
 * start from rank 0's step with the same weights and optimizer state. Then
 * every rank steps until the run ends. Rank 0 alone writes checkpoints (the
 * shard count, the world size, is in their fingerprint), the result and the
 * publication.
 *
 * Stopping alike. A cancel of the job on rank 0 (the "cancel" method, a
 * cancel from another instance, the service stopping) or any stop of rank 0's
 * fit between steps (fenced, a checkpoint that cannot be written) becomes
 * aims_trainer_cancel plus one more step on rank 0: the cancel crosses that
 * step's gradient exchange and every rank returns AIMS_E_CANCELLED from the
 * same step (aims_dist.h). The followers then wait for the next command.
 * When rank 0 shuts down it calls aims_stop_mpi_followers() and every
 * follower's aims_follow_mpi() returns AIMS_OK.
 *
 * Limits: dense kinds only (kind=text trains one document per step and fails
 * with AIMS_E_UNSUPPORTED before the followers see it); labels are int32
 * (the train service's "y"). One MPI train service per process: every job of
 * it runs on its one job thread, and MPI is used one call at a time
 * (aims_init_mpi asks for MPI_THREAD_SERIALIZED). If a rank dies, mpirun ends
 * the whole MPI job; durable jobs then resume from their checkpoints on
 * another train instance (docs/JOBS.md).
 *
 * Built without MPI, every call here returns AIMS_E_UNSUPPORTED with "built
 * without MPI".
 */
/** @file */
#ifndef AIMS_TRAIN_MPI_H
#define AIMS_TRAIN_MPI_H

#include "aims_svc.h"

AIMS_EXTERN_C_BEGIN

/**
 * @brief Make train service @p s run every job on all ranks of
 *        MPI_COMM_WORLD, this process (rank 0) leading.
 *
 * MPI must be initialized (aims_init_mpi()) and this process must be rank 0;
 * every other rank runs aims_follow_mpi(). A world of one rank trains alone
 * (the same as the ordinary service). Call before the service's first
 * submit. The trained model is bit-identical to a one-process run of the
 * same spec and rows with aims_trainer_set_shards(t, world size).
 *
 * @param s      A train service (aims_service_add_train); else AIMS_E_INVAL.
 * @param enable Non-zero: train over MPI; 0: train in this process.
 * @return AIMS_OK; AIMS_E_MISUSE (NULL s); AIMS_E_INVAL (not a train
 *         service); AIMS_E_STATE (jobs already submitted, MPI not
 *         initialized, or not rank 0); AIMS_E_UNSUPPORTED (built without
 *         MPI). aims_errmsg() names the problem.
 * @note Thread safety: once, while setting the service up.
 * @since 0.1
 */
AIMS_API aims_status aims_service_set_mpi(aims_service *s, int enable);

/**
 * @brief The follower loop of ranks 1..N-1: wait for a command from rank 0,
 *        train the job it describes together with every rank, wait again;
 *        return when rank 0 says stop.
 *
 * The follower registers nothing and listens on nothing; a job that fails or
 * is cancelled is logged (aims_set_log) and the loop goes on.
 *
 * @return AIMS_OK after rank 0's aims_stop_mpi_followers(); AIMS_E_STATE
 *         (MPI not initialized, or called on rank 0); AIMS_E_BACKEND (an MPI
 *         call failed: the MPI job is broken); AIMS_E_CORRUPT (a command that
 *         is not one); AIMS_E_NOMEM (the job's rows do not fit in memory);
 *         AIMS_E_UNSUPPORTED (built without MPI). Then finalize and exit: a
 *         follower that leaves early makes mpirun end the MPI job.
 * @note Thread safety: call from the thread that initialized MPI; blocks.
 * @since 0.1
 */
AIMS_API aims_status aims_follow_mpi(void);

/**
 * @brief On rank 0, after every MPI train service stopped
 *        (aims_service_stop or aims_node_destroy): tell the followers to
 *        leave aims_follow_mpi(). Call once, then aims_finalize_mpi().
 *
 * @return AIMS_OK; AIMS_E_STATE (MPI not initialized, or not rank 0);
 *         AIMS_E_BACKEND (the broadcast failed); AIMS_E_UNSUPPORTED (built
 *         without MPI).
 * @note Thread safety: no train service of this process may be running a
 *       job (MPI is used one call at a time).
 * @since 0.1
 */
AIMS_API aims_status aims_stop_mpi_followers(void);

AIMS_EXTERN_C_END

#endif /* AIMS_TRAIN_MPI_H */
