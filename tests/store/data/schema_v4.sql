-- A store file of schema version 4, as the scheduler before suspensions and keepRuns wrote it (sqlite3 .dump):
-- two file tasks every hour, one of them run once (a run record), a node.
BEGIN TRANSACTION;
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES('schema_version','4');
CREATE TABLE tasks (
    item_id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    spec_version REAL NOT NULL,
    source_path TEXT,
    source_line INTEGER,
    task_type TEXT NOT NULL,
    executor_type TEXT,
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
    last_success_date INTEGER,
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
    expires_at INTEGER,
    depends_on TEXT, -- the spec's dependsOn (JSON), NULL without dependencies
    waiting_on TEXT, -- JSON list of the dependencies a WAITING task waits for
    dependencies_ready INTEGER NOT NULL DEFAULT 0, -- its slot passed the dependency check
    dependencies_seen TEXT -- JSON: dependency -> the success (ms) its last check consumed
);
INSERT INTO tasks VALUES('backup','{"apiVersion":"scheduler/v1","concurrency":"forbid","description":"","enabled":true,"kind":"Task","labels":{},"name":"backup","nodes":[],"onCrash":"resume","parameters":{},"persistent":true,"retry":{"backoff":"fixed","maxRetries":3,"retryDelay":60},"run":{"shell":"true"},"runOn":"any","schedule":{"every":3600,"fixedRate":true,"initialDelay":0,"jitter":0,"missedRuns":"runOnce"},"type":"backup"}','6ee246b562621582889f7ce88cd631d8f08d961ec9bec071c3dfecc65be1d8b2',0.0,'/etc/scheduler/tasks.d/ops.yaml',1,'backup',NULL,1,1,1,'resume','[]','{}',NULL,'SCHEDULED',1893502800000,1893502800000,1,1893499200000,1893499200000,1893499200000,0,1,NULL,'{}',NULL,NULL,NULL,NULL,1,NULL,NULL,'[{"attempt":1,"error":null,"exitCode":0,"finishedAt":"2030-01-01T12:00:00Z","node":"node-a","outcome":"success","runId":"backup:1893499200000:1","scheduledFor":"2030-01-01T12:00:00Z","startedAt":"2030-01-01T12:00:00Z"}]',1893499200000,1893499200000,NULL,NULL,NULL,0,NULL);
INSERT INTO tasks VALUES('report','{"apiVersion":"scheduler/v1","concurrency":"forbid","description":"","enabled":true,"kind":"Task","labels":{},"name":"report","nodes":[],"onCrash":"resume","parameters":{},"persistent":true,"retry":{"backoff":"fixed","maxRetries":3,"retryDelay":60},"run":{"shell":"true"},"runOn":"any","schedule":{"every":3600,"fixedRate":true,"initialDelay":0,"jitter":0,"missedRuns":"runOnce"},"type":"report"}','b3265d9729a23c2be688805982dff6fe2655b6fcbf8c3ae919be0c6a771ec01e',0.0,'/etc/scheduler/tasks.d/ops.yaml',7,'report',NULL,1,1,1,'resume','[]','{}',NULL,'SCHEDULED',1893499200000,1893499200000,1,NULL,NULL,NULL,0,0,NULL,'{}',NULL,NULL,NULL,NULL,0,NULL,NULL,'[]',1893499200000,1893499200000,NULL,NULL,NULL,0,NULL);
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
INSERT INTO runs VALUES('backup:1893499200000:1','backup',1893499200000,1,'node-a',1,1893499200000,1893499200000,'success',0,replace('ok\n','\n',char(10)),NULL,1896091200000);
CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    executor INTEGER NOT NULL,
    heartbeat INTEGER NOT NULL,
    running INTEGER NOT NULL,
    started_at INTEGER,
    version TEXT NOT NULL,
    listen TEXT NOT NULL,
    task_types TEXT NOT NULL DEFAULT '[]',
    stuck INTEGER NOT NULL DEFAULT 0
);
INSERT INTO nodes VALUES('node-a',1,1893499200000,0,1893499200000,'0.1.0','127.0.0.1:8181','[]',0);
CREATE TABLE declarations (
    item_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    spec TEXT, -- NULL while it is the spec the task holds, which the task row has (sqlite_declarations)
    spec_hash TEXT NOT NULL,
    since INTEGER NOT NULL,
    declared_at INTEGER NOT NULL,
    source_path TEXT,
    source_line INTEGER,
    pinned TEXT,
    PRIMARY KEY (item_id, node_id)
);
CREATE INDEX tasks_dependents ON tasks (next_at) WHERE depends_on IS NOT NULL AND dependencies_ready = 0;
CREATE INDEX tasks_claim ON tasks (executor_type, next_at, item_id, node, nodes) WHERE enabled = 1 AND (depends_on IS NULL OR dependencies_ready = 1) AND (status = 'SCHEDULED' OR (status = 'CRASHED' AND on_crash = 'resume'));
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
CREATE INDEX declarations_by_node ON declarations (node_id, item_id);
COMMIT;
