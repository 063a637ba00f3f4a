"""The eight baselines of MSGNN's Table 1, one module each (file name = registry key); importing a
module registers it. The package imports none of them: ``benchmark.core.registry`` imports only the
module of the model it builds, so a stage of one baseline never runs another baseline's file.
"""
