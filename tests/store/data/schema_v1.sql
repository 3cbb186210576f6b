-- A store file of schema version 1, as the scheduler before executor types wrote it (sqlite3 .dump):
-- a builder task of type appJob without run:, a file task with run:, a runOn: all copy, a node.
BEGIN TRANSACTION;
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO "meta" VALUES('schema_version','1');
CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    executor INTEGER NOT NULL,
    heartbeat INTEGER NOT NULL,
    running INTEGER NOT NULL,
    started_at INTEGER,
    version TEXT NOT NULL,
    listen TEXT NOT NULL
);
INSERT INTO "nodes" VALUES('node-a',1,1893499200000,0,1893499200000,'0.1.0','127.0.0.1:8181');
CREATE TABLE runs (
    run_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    scheduled_for INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    fence INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    outcome TEXT,
    exit_code INTEGER,
    output TEXT NOT NULL DEFAULT '',
    error TEXT,
    expires_at INTEGER,
    PRIMARY KEY (task_id, scheduled_for, attempt)
) WITHOUT ROWID;
CREATE TABLE tasks (
    item_id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    spec_version REAL NOT NULL,
    source_path TEXT,
    source_line INTEGER,
    task_type TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    persistent INTEGER NOT NULL,
    origin_file INTEGER NOT NULL,
    on_crash TEXT NOT NULL,
    nodes TEXT NOT NULL,
    labels TEXT NOT NULL,
    node TEXT,
    status TEXT NOT NULL,
    next_at INTEGER,
    scheduled_for INTEGER,
    attempt INTEGER NOT NULL,
    last_execution_date INTEGER,
    last_finish_date INTEGER,
    failure_count INTEGER NOT NULL,
    success_count INTEGER NOT NULL,
    current_step TEXT,
    status_details TEXT NOT NULL,
    checkpoint_data TEXT,
    last_error TEXT,
    lease_owner TEXT,
    lease_until INTEGER,
    fence INTEGER NOT NULL,
    max_retries_override INTEGER,
    retry_delay_override INTEGER,
    history TEXT NOT NULL,
    creation_date INTEGER NOT NULL,
    last_modified INTEGER NOT NULL,
    expires_at INTEGER
);
INSERT INTO "tasks" VALUES('app-job','{"apiVersion":"scheduler/v1","concurrency":"forbid","description":"","enabled":true,"kind":"Task","labels":{},"name":"app-job","nodes":[],"onCrash":"resume","parameters":{},"persistent":true,"retry":{"backoff":"fixed","maxRetries":3,"retryDelay":60},"runOn":"any","schedule":{"after":0,"jitter":0,"missedRuns":"runOnce"},"type":"appJob"}','ca4982723642001fb9605f241d000f7560df908c6f8f09a433f077edf15b3f05',0.0,'<builder>',0,'appJob',1,1,0,'resume','[]','{}',NULL,'SCHEDULED',1893499200000,1893499200000,1,NULL,NULL,0,0,NULL,'{}',NULL,NULL,NULL,NULL,0,NULL,NULL,'[]',1893499200000,1893499200000,NULL);
INSERT INTO "tasks" VALUES('backup','{"apiVersion":"scheduler/v1","concurrency":"forbid","description":"","enabled":true,"kind":"Task","labels":{},"name":"backup","nodes":[],"onCrash":"resume","parameters":{},"persistent":true,"retry":{"backoff":"fixed","maxRetries":3,"retryDelay":60},"run":{"command":["/usr/local/bin/backup"]},"runOn":"any","schedule":{"cron":"0 3 * * *","jitter":0,"missedRuns":"runOnce","timezone":"UTC"},"type":"backup"}','1b57b57a98b43e82ddc8a4afa0db8d53e50d4a3902bb6abbc76ae3c87fe891ab',0.0,'/etc/scheduler/tasks.d/backup.yaml',1,'backup',1,1,1,'resume','[]','{}',NULL,'SCHEDULED',1893553200000,1893553200000,1,NULL,NULL,0,0,NULL,'{}',NULL,NULL,NULL,NULL,0,NULL,NULL,'[]',1893499200000,1893499200000,NULL);
INSERT INTO "tasks" VALUES('inventory@node-a','{"apiVersion":"scheduler/v1","concurrency":"forbid","description":"","enabled":true,"kind":"Task","labels":{},"name":"inventory","nodes":[],"onCrash":"resume","parameters":{},"persistent":true,"retry":{"backoff":"fixed","maxRetries":3,"retryDelay":60},"runOn":"all","schedule":{"every":3600,"fixedRate":true,"initialDelay":0,"jitter":0,"missedRuns":"runOnce"},"type":"inventory"}','6c9b03f596a51680f3caf9089a41eee35951e5d3873dd992d537d4be8fab904b',0.0,'/etc/scheduler/tasks.d/inventory.yaml',1,'inventory',1,1,1,'resume','[]','{}','node-a','SCHEDULED',1893499140000,1893499140000,1,NULL,NULL,0,0,NULL,'{}',NULL,NULL,NULL,NULL,0,NULL,NULL,'[]',1893499200000,1893499200000,NULL);
CREATE INDEX tasks_claim ON tasks (next_at, item_id) WHERE enabled = 1 AND (status = 'SCHEDULED' OR (status = 'CRASHED' AND on_crash = 'resume'));
CREATE INDEX tasks_recover ON tasks (lease_until, item_id) WHERE status = 'RUNNING';
CREATE INDEX tasks_expiry ON tasks (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX tasks_status ON tasks (status, item_id);
CREATE INDEX tasks_type ON tasks (task_type, item_id);
CREATE INDEX tasks_next ON tasks (next_at, item_id);
CREATE INDEX tasks_last_execution ON tasks (last_execution_date, item_id);
CREATE INDEX tasks_creation ON tasks (creation_date, item_id);
CREATE INDEX tasks_failures ON tasks (failure_count, item_id);
CREATE INDEX tasks_successes ON tasks (success_count, item_id);
CREATE INDEX runs_by_task ON runs (task_id, started_at DESC, attempt DESC);
CREATE INDEX runs_expiry ON runs (expires_at) WHERE expires_at IS NOT NULL;
COMMIT;
