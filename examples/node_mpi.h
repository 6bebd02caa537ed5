/*
 * node_mpi.h -- `aims-node --train-mpi`: the daemon's MPI start, follower
 * loop and shutdown (node_mpi.c; docs/MPI.md "As a train service").
 */
#ifndef NODE_MPI_H
#define NODE_MPI_H

/* Start MPI; 0 with this process's rank and the world size, -1 after
 * printing why (built without MPI, MPI failed to start). */
int node_mpi_init(int *rank, int *size);
/* Ranks 1..N-1: follow rank 0 until it says stop, finalize MPI; returns the
 * process's exit status (0 after rank 0's stop, 1 on failure). */
int node_mpi_follow(int rank);
/* Rank 0, after every service stopped: tell the followers to stop, finalize
 * MPI. Safe to call once whatever state the node is in. */
void node_mpi_finish(void);


#endif
