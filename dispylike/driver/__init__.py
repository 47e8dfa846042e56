"""Driving one computation on a set of nodes: join them, set it up, dispatch jobs and
collect replies (the engine and its mixins).  JobCluster runs one engine per cluster;
dispyscheduler runs one per client computation.  Never imports client/ or scheduler/."""
