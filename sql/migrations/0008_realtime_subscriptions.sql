-- 0008: what each listening session watches: a run (kind 'run', key: its id), a tag, a
-- batch, or every run (kind 'all', key '*'). notify_runs announces only the runs someone
-- watches, so a subscription to one run costs the workers nothing for the others: NOTIFY
-- holds a cluster-wide lock from commit until the flush, which serialises the commits of
-- every transaction that sends one (bench/realtime.py measured 20% of a drain).
-- Unlogged, like skiplock.subscribers: the sessions do not survive a crash either.
CREATE UNLOGGED TABLE skiplock.subscriptions (
    kind  text    NOT NULL CHECK (kind IN ('run', 'tag', 'batch', 'all')),
    key   text    NOT NULL,
    pid   integer NOT NULL,
    PRIMARY KEY (kind, key, pid)
);
