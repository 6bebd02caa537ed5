"""mpi_env.py -- how libaims' tests and benchmarks launch Open MPI on one host.

Shared memory between the ranks (vader; the single-copy mechanism off, since
containers often forbid the cross-memory attach it needs), the ob1 messaging
layer (no UCX probing), no ssh agent, oversubscription allowed (3 ranks on 2
cores), no core binding and waiting ranks yield (other work shares the machine), and root allowed (CI
containers run as root). Used by tests/integration/mpi_check.py and
bench/run_mpi.py.
"""
MPI_ENV = {
    "OMPI_MCA_btl": "self,vader",
    "OMPI_MCA_pml": "ob1",
    "OMPI_MCA_osc": "^ucx",
    "OMPI_MCA_btl_vader_single_copy_mechanism": "none",
    "OMPI_MCA_plm_rsh_agent": "",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
    "OMPI_MCA_hwloc_base_binding_policy": "none",
    # a rank waiting in a collective yields its core instead of spinning: on a
    # machine shared with other work, spinning ranks starve the rank they wait for
    "OMPI_MCA_mpi_yield_when_idle": "1",
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
}
