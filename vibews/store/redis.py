"""The shared store: several vibews nodes on one Redis behave, to every client, as one server.

Why a mirror and not one Lua script per message type: the hub's rules (handlers, lifecycle) are
written once, against :class:`~vibews.store.IStoreTransaction`, whose reads are synchronous. Porting
every rule to Lua would give two implementations that drift; calling Redis for every read would
block the reactor. So every node keeps a full copy of the committed state in an in-memory SQLite
database (the *mirror*, with the embedded store's schema and SQL) and runs a batch of work against
it exactly as the embedded store does. What the batch wrote becomes a list of ops (journal entries,
row writes), and what it read becomes a list of guards.

One Lua script (``COMMIT_SCRIPT``) then commits the batch atomically. It checks the guards: each row
the batch read or wrote still carries the *stamp* (number of the commit that last wrote it) the
mirror saw; no other node stored an id the duplicate check did not find; and so on. It then
*assigns the seqs*: the batch's journal entries get the seqs after the deployment's head. When other
nodes appended since the mirror's head, the script moves every seq the batch created, in the frames
and rows too. It appends the entries to a Stream (entry id ``<seq>-0``), writes the rows and their
stamps, and appends the commit to a ``commits`` Stream. A failed guard means another node wrote what
the batch read: nothing is written, the node catches up and runs the batch again. So ``seq`` is one
gapless sequence across the deployment, assigned where it is appended, and nodes that write
unrelated rows (different agents' status) never wait for each other.

Every node tails ``commits`` (a blocking ``XREAD`` on its own connection) and applies each commit to
its mirror in ``version`` order. A node's own commit fires its Deferreds (ack, relay) when the reply
comes, or, if the script moved its seqs, when the tail brings it with them; another node's is
handed to ``on_foreign`` (the cluster hub relays them to local clients). Hence
every dashboard, on any node, sees the same gapless order. An ack still means "stored": it is sent
only once Redis confirmed the commit. If Redis is away the batch fails with StoreUnavailable; if the
reply was lost but the commit landed, the tail later applies it like any other node's, so nothing is
lost or doubled.

A fresh node loads the committed rows and the retained journal, then tails from the version it
loaded. Agents connected to each node are tracked per node (``members``), with a heartbeat key per
node whose TTL lets the others notice a node that died (:mod:`vibews.cluster`).
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import attrs
import txredisapi
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vibews.lifecycle import Accepted
from vibews.store import IStoreTransaction, QuestionRecord, StoredMessage, StoreUnavailable
from vibews.store.sqlite import _SCHEMA, JOURNAL_DEDUP, SQLiteStore, _Transaction

T = TypeVar("T")
_log = Logger()

# Hashes holding derived state; the index is what ops name (and the Lua script's KEYS index - 4).
TABLES: tuple[str, ...] = ("agents", "tasks", "questions", "pending", "members")
_KEY_COLUMNS = {
    "agents": ("name",),
    "tasks": ("task_id",),
    "questions": ("id",),
    "pending": ("seq",),
    "members": ("node", "agent"),
}
_COLUMNS = {
    "agents": ("name", "online", "status", "last_seen"),
    "tasks": ("task_id", "data"),
    "questions": (
        "id",
        "agent",
        "seq",
        "state",
        "closing_seq",
        "data",
        "deadline",
        "schema",
        "answer_seq",
        "claim_by",
        "claim_until",
        "claim_connection",
        "delivered_at",
    ),
    "pending": ("seq", "agent", "type", "data"),
    "members": ("node", "agent"),
}
_FLOAT_COLUMNS = frozenset(
    _COLUMNS["questions"].index(name) for name in ("deadline", "claim_until")
)
_MIRROR_EXTRA = """
CREATE TABLE IF NOT EXISTS members (node TEXT NOT NULL, agent TEXT NOT NULL,
    PRIMARY KEY (node, agent));
"""

# KEYS: version, head, journal, commits, stamps, ids, then TABLES in order (a table's KEYS index is
# 6 + its number). ARGV: node, nonce, guards (JSON), ops (JSON), base (the head the batch was
# computed at), commits kept, the commit the node's mirror was at (a Redis behind it lost its data:
# nothing is written, and the node reloads).
#
# A guard is ["*", version] (nothing at all was committed since: for reads that range over a whole
# table), ["#", id key] (no journal entry has this sender and id) or [stamp key, stamp] (this row,
# or this agent's questions or nodes, was last written by commit ``stamp``; 0: never, or deleted).
# If one fails, nothing is written: the node catches up and runs the batch again.
#
# An op is ["j", seq, type, sender, message_id, agent, data] (journal append; "" for None),
# ["h", table, field, row JSON, extra stamp key] (set a row), ["d", table, field, extra stamp key]
# (drop a row) or ["t", seq] (trim the journal below seq). The script gives the journal entries
# the seqs after the deployment's head: when other nodes appended since ``base`` it moves every
# seq above ``base`` (entry ids, each frame's own "seq", the seq columns and frames of rows, the
# pending table's keys) by the difference, and records the moved ops in the commit.
COMMIT_SCRIPT = """
local version = tonumber(redis.call('GET', KEYS[1]) or '0')
if version < tonumber(ARGV[7]) then
  return {0, version}
end
for _, guard in ipairs(cjson.decode(ARGV[3])) do
  local what = guard[1]
  if what == '*' then
    if version ~= guard[2] then return {0, version} end
  elseif what == '#' then
    if redis.call('HEXISTS', KEYS[6], guard[2]) == 1 then return {0, version} end
  elseif tonumber(redis.call('HGET', KEYS[5], what) or '0') ~= guard[2] then
    return {0, version}
  end
end
if ARGV[4] == '[]' then
  return {1, version, 0}
end
local base = tonumber(ARGV[5])
local head = tonumber(redis.call('GET', KEYS[2]) or '0')
local shift = head - base
local ops = cjson.decode(ARGV[4])
local TABLES = {'agents', 'tasks', 'questions', 'pending', 'members'}
local PENDING = 4
local SEQ_COLUMNS = {[3] = {3, 5, 9}, [4] = {1}}
local FRAME_COLUMN = {[2] = 2, [3] = 6, [4] = 4}
-- A frame's own seq is its first "seq" key: the keys before it are fixed names, and inside a
-- JSON string a quote is always escaped.
local function reseq(frame)
  local _, colon = string.find(frame, '"seq":', 1, true)
  if not colon then return frame end
  local digits = string.match(frame, '^%d+', colon + 1)
  if not digits or tonumber(digits) <= base then return frame end
  return string.sub(frame, 1, colon) .. (tonumber(digits) + shift) ..
    string.sub(frame, colon + 1 + #digits)
end
if shift ~= 0 then
  for _, op in ipairs(ops) do
    local kind = op[1]
    if kind == 'j' then
      op[2] = tostring(tonumber(op[2]) + shift)
      op[7] = reseq(op[7])
    elseif (kind == 'h' or kind == 'd') and op[2] == PENDING and tonumber(op[3]) > base then
      op[3] = tostring(tonumber(op[3]) + shift)
    end
    if kind == 'h' and FRAME_COLUMN[op[2]] then
      local row = cjson.decode(op[4])
      for _, column in ipairs(SEQ_COLUMNS[op[2]] or {}) do
        if type(row[column]) == 'number' and row[column] > base then
          row[column] = row[column] + shift
        end
      end
      row[FRAME_COLUMN[op[2]]] = reseq(row[FRAME_COLUMN[op[2]]])
      op[4] = cjson.encode(row)
    end
  end
end
version = version + 1
for _, op in ipairs(ops) do
  local kind = op[1]
  if kind == 'j' then
    redis.call('XADD', KEYS[3], op[2] .. '-0', 'type', op[3], 'sender', op[4], 'mid', op[5],
      'agent', op[6], 'data', op[7])
    if op[5] ~= '' then
      redis.call('HSET', KEYS[6], #op[4] .. ':' .. op[4] .. op[5], op[2])
    end
    head = tonumber(op[2])
  elseif kind == 'h' then
    redis.call('HSET', KEYS[6 + op[2]], op[3], op[4])
    redis.call('HSET', KEYS[5], TABLES[op[2]] .. ' ' .. op[3], version)
    if op[5] ~= '' then redis.call('HSET', KEYS[5], op[5], version) end
  elseif kind == 'd' then
    redis.call('HDEL', KEYS[6 + op[2]], op[3])
    redis.call('HDEL', KEYS[5], TABLES[op[2]] .. ' ' .. op[3])
    if op[4] ~= '' then redis.call('HSET', KEYS[5], op[4], version) end
  elseif kind == 't' then
    local last = (tonumber(op[2]) - 1) .. '-0'
    for _, entry in ipairs(redis.call('XRANGE', KEYS[3], '-', last)) do
      local fields, sender, mid = entry[2], '', ''
      for i = 1, #fields, 2 do
        if fields[i] == 'sender' then sender = fields[i + 1] end
        if fields[i] == 'mid' then mid = fields[i + 1] end
      end
      if mid ~= '' then redis.call('HDEL', KEYS[6], #sender .. ':' .. sender .. mid) end
    end
    redis.call('XTRIM', KEYS[3], 'MINID', op[2] .. '-0')
  end
end
local recorded = ARGV[4]
if shift ~= 0 then recorded = cjson.encode(ops) end
redis.call('SET', KEYS[1], version)
redis.call('SET', KEYS[2], head)
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], version .. '-0', 'node', ARGV[1],
  'nonce', ARGV[2], 'shift', shift, 'ops', recorded)
return {1, version, shift}
"""

# KEYS: version, head, epoch, stamps, then TABLES in order. Everything a new node starts from,
# atomically.
LOAD_SCRIPT = """
local out = {redis.call('GET', KEYS[1]) or '0', redis.call('GET', KEYS[2]) or '0',
  redis.call('GET', KEYS[3]) or ''}
for i = 4, #KEYS do
  out[#out + 1] = redis.call('HGETALL', KEYS[i])
end
return out
"""

COMMITS_KEPT = 100_000  # a node further behind than this reloads (and its clients reconnect)
TAIL_BLOCK_MS = 1000
REPLY_TIMEOUT = 5.0
RECONNECT_MAX_DELAY = 2.0


@attrs.frozen
class RedisAddress:
    """What ``--redis redis://[:password@]host:port/db`` names; ``rediss://`` connects with TLS
    (verified against the system's trust store, or ``?ssl_ca_certs=FILE``, as redis-py spells it)."""

    host: str
    port: int
    db: int
    password: str | None
    tls: bool
    ca_file: str | None = None

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"expected redis://host:port/db or rediss://..., got {url!r}")
        if not parts.hostname:
            raise ValueError(f"no host in {url!r}")
        path = parts.path.strip("/")
        try:
            port = parts.port or 6379
            db = int(path) if path else 0
        except ValueError:
            raise ValueError(f"bad port or database number in {url!r}") from None
        if db < 0:
            raise ValueError(f"bad database number in {url!r}")
        password = unquote(parts.password) if parts.password else None
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - {"ssl_ca_certs"})
        if unknown:
            raise ValueError(f"unknown parameter {unknown[0]!r} in {url!r} (known: ssl_ca_certs)")
        ca_file = query.get("ssl_ca_certs", [None])[-1]
        if ca_file is not None and parts.scheme != "rediss":
            raise ValueError("ssl_ca_certs needs rediss:// (TLS)")
        return cls(parts.hostname, port, db, password, parts.scheme == "rediss", ca_file)


def _connect(address: RedisAddress) -> Any:
    """A lazily connecting txredisapi handler that reconnects by itself (backoff capped at 2 s)."""
    tls: Any = False
    if address.tls:
        tls = _tls_options(address)
    handler = txredisapi.lazyConnection(
        address.host,
        address.port,
        dbid=address.db or None,
        password=address.password,
        ssl_context_factory=tls,
        connectTimeout=REPLY_TIMEOUT,
        replyTimeout=REPLY_TIMEOUT,
        convertNumbers=False,
    )
    handler._factory.maxDelay = RECONNECT_MAX_DELAY
    # The first connection's outcome: a failure is retried by the client and shown by problem().
    handler._factory.deferred.addErrback(
        lambda failure: _log.warn(
            "connecting to redis failed: {error}", error=failure.getErrorMessage()
        )
    )
    handler._factory.initialDelay = 0.1
    return handler


def _tls_options(address: RedisAddress) -> Any:
    """Certificate verification on, for the host in the URL; raises ValueError if the CA file
    cannot be used (at start, so a typo stops the node with a clear message)."""
    from twisted.internet.ssl import Certificate, optionsForClientTLS, platformTrust

    if address.ca_file is None:
        return optionsForClientTLS(address.host, trustRoot=platformTrust())
    try:
        with open(address.ca_file, "rb") as pem:
            root = Certificate.loadPEM(pem.read())
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read ssl_ca_certs {address.ca_file}: {error}") from None
    except Exception as error:  # OpenSSL's own errors: not a PEM certificate
        raise ValueError(
            f"ssl_ca_certs {address.ca_file} is not a PEM certificate: {error}"
        ) from None
    return optionsForClientTLS(address.host, trustRoot=root)


def _connected(handler: Any) -> bool:
    return bool(handler._factory.size)


@implementer(IStoreTransaction)
class ClusterTransaction(_Transaction):
    """The embedded store's transaction on the mirror, plus which agents are connected to which
    node (for presence across nodes), a note of every row it touches, and the *guards*: what the
    batch's outcome rests on, which the commit script checks is still what Redis holds.

    A guard names the stamp (the commit that last wrote it) of every row the batch read or wrote,
    as the mirror had it when the batch started; an id the duplicate check did not find; for a
    question count or an agent's nodes, a stamp per agent; and for reads over a whole table, the
    commit counter itself. So two batches conflict only if one read what the other wrote.
    """

    def __init__(self, store: RedisStore) -> None:
        super().__init__(store)
        self._stamps = store._stamps
        self._base = store._head
        self.touched: dict[str, set[tuple[Any, ...]]] = {table: set() for table in TABLES}
        self.guards: dict[str, int] = {}
        self.unknown_ids: set[str] = set()
        self.everything = False  # read a whole table: guard on the commit counter

    def _guard(self, key: str) -> None:
        if key not in self.guards:
            self.guards[key] = self._stamps.get(key, 0)

    def _touch(self, table: str, *key: Any) -> None:
        self.touched[table].add(key)
        if table == "pending" and int(key[0]) > self._base:
            return  # an answer this batch appended: no row of Redis can hold its seq yet
        self._guard(f"{table} {_field(key)}")

    def guard_list(self, version: int) -> list[list[Any]]:
        guards: list[list[Any]] = [[key, stamp] for key, stamp in sorted(self.guards.items())]
        guards += [["#", key] for key in sorted(self.unknown_ids)]
        if self.everything:
            guards.append(["*", version])
        return guards

    def find_duplicate(self, sender: str, message_id: str) -> int | None:
        seq = super().find_duplicate(sender, message_id)
        if seq is None:
            self.unknown_ids.add(id_key(sender, message_id))
        return seq

    def get_question(self, question_id: str) -> QuestionRecord | None:
        self._guard(f"questions {question_id}")
        return super().get_question(question_id)

    def count_open_questions(self, agent: str) -> int:
        self._guard(f"qa {agent}")
        return super().count_open_questions(agent)

    def online_agents(self) -> list[str]:
        self.everything = True
        return super().online_agents()

    def claimed_questions(self) -> list[QuestionRecord]:
        questions = super().claimed_questions()
        for question in questions:
            self._guard(f"questions {question.id}")
        return questions

    def overdue_questions(self, now: float) -> list[QuestionRecord]:
        questions = super().overdue_questions(now)
        for question in questions:
            self._guard(f"questions {question.id}")
        return questions

    def set_agent_status(self, name: str, payload: Mapping[str, Any]) -> None:
        self._touch("agents", name)
        super().set_agent_status(name, payload)

    def set_presence(self, name: str, online: bool, last_seen: str) -> None:
        self._touch("agents", name)
        super().set_presence(name, online, last_seen)

    def set_task(self, task_id: str, frame: Mapping[str, Any]) -> None:
        self._touch("tasks", task_id)
        super().set_task(task_id, frame)

    def add_question(
        self,
        question_id: str,
        agent: str,
        seq: int,
        frame: Mapping[str, Any],
        deadline: float | None,
        schema: Mapping[str, Any] | None,
    ) -> None:
        self._touch("questions", question_id)
        self._guard(f"qa {agent}")
        super().add_question(question_id, agent, seq, frame, deadline, schema)

    def close_question(
        self, question_id: str, state: str, closing_seq: int, answer_seq: int | None = None
    ) -> None:
        self._touch("questions", question_id)
        super().close_question(question_id, state, closing_seq, answer_seq)

    def set_claim(self, question_id: str, claim: Any) -> None:
        self._touch("questions", question_id)
        super().set_claim(question_id, claim)

    def mark_delivered(self, answer_seq: int, delivered_at: str) -> str | None:
        question_id = super().mark_delivered(answer_seq, delivered_at)
        if question_id is not None:
            self._touch("questions", question_id)
        return question_id

    def add_pending(self, agent: str, message: StoredMessage) -> None:
        self._touch("pending", message.seq)
        super().add_pending(agent, message)

    def clear_pending(self, agent: str, seqs: Collection[int]) -> list[int]:
        for seq in seqs:
            if seq <= self._base:
                self._guard(f"pending {seq}")
        cleared = super().clear_pending(agent, seqs)
        for seq in cleared:
            self._touch("pending", seq)
        return cleared

    # -- presence across nodes ----------------------------------------------------------------

    def agent_nodes(self, agent: str) -> set[str]:
        """The nodes that hold at least one connection of ``agent``."""
        self._guard(f"ma {agent}")
        rows = self._db.execute("SELECT node FROM members WHERE agent = ?", (agent,))
        return {str(row[0]) for row in rows}

    def node_agents(self, node: str) -> list[str]:
        self.everything = True
        rows = self._db.execute("SELECT agent FROM members WHERE node = ? ORDER BY agent", (node,))
        return [str(row[0]) for row in rows]

    def join(self, node: str, agent: str) -> None:
        self._touch("members", node, agent)
        self._guard(f"ma {agent}")
        self._db.execute("INSERT OR IGNORE INTO members (node, agent) VALUES (?, ?)", (node, agent))

    def leave(self, node: str, agent: str) -> None:
        self._touch("members", node, agent)
        self._guard(f"ma {agent}")
        self._db.execute("DELETE FROM members WHERE node = ? AND agent = ?", (node, agent))


def id_key(sender: str, message_id: str) -> str:
    """The field of a stored message's (sender, id) in the ``ids`` hash (as the script builds it:
    the sender's length in bytes first, so no pair of strings can collide)."""
    return f"{len(sender.encode())}:{sender}{message_id}"


def _extra_stamp(table: str, row: Sequence[Any] | None, key: tuple[Any, ...]) -> str:
    """The per-agent stamp a row write also moves: an agent's questions (for the open count) or
    its nodes (for presence)."""
    if table == "questions" and row is not None:
        return f"qa {row[1]}"
    if table == "members":
        return f"ma {key[1]}"
    return ""


def _field(key: tuple[Any, ...]) -> str:
    return " ".join(str(part) for part in key)


def _row_json(row: Sequence[Any]) -> str:
    """A row for Redis. Floats travel as text: the script may decode and re-encode a row, and Lua's
    JSON encoder keeps only 14 digits."""
    return json.dumps(
        [
            v.decode() if isinstance(v, bytes) else repr(v) if isinstance(v, float) else v
            for v in row
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )


class RedisStore(SQLiteStore):
    """The store of a node in a cluster: reads from the mirror, commits through Redis.

    Reads (snapshot, replay, pending answers) are the embedded store's, on the mirror; only
    ``transact`` and the bookkeeping around it differ.
    """

    def __init__(
        self,
        url: str,
        clock: IReactorTime,
        history: int = 100_000,
        on_commit: Callable[[float, int], None] | None = None,
        prefix: str = "vibews:",
        node: str | None = None,
    ) -> None:
        # Deliberately not SQLiteStore.__init__: no file, no lock; the mirror is in memory.
        self.address = RedisAddress.parse(url)
        if self.address.tls:
            _tls_options(self.address)  # refuse a bad CA file now, not at the first connect
        self._clock = clock
        self._history = history
        self._on_commit = on_commit
        self._db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self._db.executescript(_SCHEMA + JOURNAL_DEDUP + _MIRROR_EXTRA)
        self._head = 0
        self._oldest = 1
        self._queue: list[tuple[Callable[[IStoreTransaction], Any], Deferred[Any]]] = []
        self._flush_call: Any = None
        self._closed = False
        self.epoch = ""
        self.node = node or uuid.uuid4().hex[:12]
        self._prefix = prefix
        self._keys = {
            name: prefix + name
            for name in ("version", "head", "journal", "commits", "epoch", "stamps", "ids", *TABLES)
        }
        # Which commit last wrote each row (and each agent's questions and nodes), as Redis has it.
        self._stamps: dict[str, int] = {}
        self._version = 0
        self.conflicts = 0  # batches run again because another node wrote what they read
        self.moved = 0  # commits whose seqs the script moved (other nodes appended meanwhile)
        self._tail_generation = 0
        self._reloading = False
        self._loaded = False
        self._problem: str | None = "connecting to redis"
        self._in_flight: _InFlight | None = None
        self._wait_version = 0
        self._redis: Any = None
        self._tail_redis: Any = None
        self._commit_sha = ""
        self._tail_call: IDelayedCall | None = None
        # Another node's commit applied to the mirror: its journal entries, and whether this
        # node's own members were dropped by it (another node thought this one dead).
        self.on_foreign: Callable[[list[StoredMessage], bool], None] = lambda m, dropped: None
        self.on_resync: Callable[[], None] = lambda: None

    def node_key(self, node: str) -> str:
        return f"{self._prefix}node:{node}"

    # -- start ----------------------------------------------------------------------------------

    @inlineCallbacks
    def open(self) -> Any:
        """Connect, name the epoch (once per deployment), load the state, start tailing. Retries
        until Redis answers: a node that starts while Redis is away serves as soon as it is back."""
        self._redis = _connect(self.address)
        self._tail_redis = _connect(self.address)
        while not self._closed:
            try:
                yield self._load()
            except Exception as error:
                problem = f"redis unavailable: {error}"
                if problem != self._problem:  # once per kind of failure, not every half second
                    _log.warn("cannot load from redis yet: {error}", error=str(error))
                self._problem = problem
                yield _sleep(self._clock, 0.5)
                continue
            break
        if self._closed:
            return
        self._loaded = True
        self._problem = None
        _log.info(
            "joined the cluster on redis {host}:{port}/{db} as node {node} at seq {seq}",
            host=self.address.host,
            port=self.address.port,
            db=self.address.db,
            node=self.node,
            seq=self._head,
        )
        self._tail()

    @inlineCallbacks
    def _load(self) -> Any:
        redis = self._redis
        yield self._tail_redis.execute_command("PING")  # both connections up before serving
        self._commit_sha = yield redis.script_load(COMMIT_SCRIPT)
        yield redis.execute_command("SET", self._keys["epoch"], uuid.uuid4().hex, "NX")
        keys = [self._keys[k] for k in ("version", "head", "epoch", "stamps")] + [
            self._keys[t] for t in TABLES
        ]
        loaded = yield redis.eval(LOAD_SCRIPT, keys)
        version, head, epoch = int(loaded[0]), int(loaded[1]), str(loaded[2])
        stamps = _fields(loaded[3])
        self._stamps = {key: int(stamp) for key, stamp in stamps.items()}
        self._db.execute("BEGIN")
        for table in ("journal", *TABLES):
            self._db.execute(f"DELETE FROM {table}")  # noqa: S608 (constant names)
        for table, flat in zip(TABLES, loaded[4:], strict=True):
            for index in range(0, len(flat), 2):
                self._put_row(table, json.loads(flat[index + 1]))
        self._db.execute("COMMIT")
        oldest = head + 1
        cursor = "-"
        while True:
            page = yield redis.execute_command(
                "XRANGE", self._keys["journal"], cursor, f"{head}-0", "COUNT", 1000
            )
            if not page:
                break
            self._db.execute("BEGIN")
            for entry_id, fields in page:
                seq = int(entry_id.split("-")[0])
                oldest = min(oldest, seq)
                self._insert_journal(seq, _fields(fields))
            self._db.execute("COMMIT")
            cursor = "(" + page[-1][0]
        self.epoch, self._version, self._head, self._oldest = epoch, version, head, oldest

    def _put_row(self, table: str, row: list[Any]) -> None:
        columns = _COLUMNS[table]
        if table == "pending":
            row = [row[0], row[1], row[2], row[3].encode()]
        elif table == "questions":
            row = [
                float(v) if i in _FLOAT_COLUMNS and v is not None else v for i, v in enumerate(row)
            ]
        self._db.execute(
            f"INSERT OR REPLACE INTO {table} ({', '.join(columns)})"  # noqa: S608 (constants)
            f" VALUES ({', '.join('?' * len(columns))})",
            row,
        )

    def _delete_row(self, table: str, field: str) -> None:
        columns = _KEY_COLUMNS[table]
        values: list[Any] = field.split(" ", len(columns) - 1)
        where = " AND ".join(f"{column} = ?" for column in columns)
        self._db.execute(f"DELETE FROM {table} WHERE {where}", values)  # noqa: S608 (constants)

    def _insert_journal(self, seq: int, fields: Mapping[str, str]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO journal (seq, type, sender, message_id, agent, data)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                seq,
                fields["type"],
                fields["sender"] or None,
                fields["mid"] or None,
                fields["agent"] or None,
                fields["data"].encode(),
            ),
        )

    # -- writes ---------------------------------------------------------------------------------

    def transact(self, work: Callable[[IStoreTransaction], T]) -> Deferred[T]:
        if self._closed:
            raise StoreUnavailable("the store is closed")
        done: Deferred[T] = Deferred()
        self._queue.append((work, done))
        self._schedule()
        return done

    def _schedule(self) -> None:
        if self._flush_call is None and self._queue and self._in_flight is None:
            self._flush_call = self._clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        if self._in_flight is not None or not self._queue:
            return
        if not self._loaded or not self.reachable():
            self._refuse_queue("redis is not reachable")
            return
        if self._version < self._wait_version:
            return  # the tail is catching up with a commit that beat ours; it calls again
        batch, self._queue = self._queue, []
        head_before, oldest_before = self._head, self._oldest
        outcomes: list[Any] = []
        try:
            self._db.execute("BEGIN")
            txn = ClusterTransaction(self)
            for work, _ in batch:
                outcomes.append(self._run_one(work, txn))
            ops = self._ops(txn, head_before)
        except sqlite3.Error as error:
            ops = None
            _log.error("the mirror failed a batch: {error}", error=str(error))
        finally:
            # The mirror only changes by applying commits: what the batch wrote is undone here.
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            new_head, self._head, self._oldest = self._head, head_before, oldest_before
        if ops is None:
            self._fail(batch, StoreUnavailable("the store failed this batch; retry later"))
            self._schedule()
            return
        # Even a batch that writes nothing (duplicates, refusals, no-op transitions) has its
        # guards checked: its answers must not rest on a mirror that trails another node's write
        # of what it read.
        guards = txn.guard_list(self._version)
        flight = _InFlight(
            uuid.uuid4().hex, batch, outcomes, head_before, self._version, ops, new_head
        )
        self._in_flight = flight
        keys = [
            self._keys[k] for k in ("version", "head", "journal", "commits", "stamps", "ids")
        ] + [self._keys[t] for t in TABLES]
        args = [
            self.node,
            flight.nonce,
            json.dumps(guards, ensure_ascii=False),
            json.dumps(ops, ensure_ascii=False),
            head_before,
            COMMITS_KEPT,
            flight.version,
        ]
        started = self._clock.seconds()
        d = self._redis.evalsha(self._commit_sha, keys, args)
        d.addCallbacks(self._committed, self._commit_failed, (flight, started), None, (flight,))

    def _ops(self, txn: ClusterTransaction, head_before: int) -> list[list[Any]]:
        ops: list[list[Any]] = []
        for seq, kind, sender, mid, agent, data in self._db.execute(
            "SELECT seq, type, sender, message_id, agent, data FROM journal WHERE seq > ?"
            " ORDER BY seq",
            (head_before,),
        ):
            ops.append(
                ["j", str(seq), kind, sender or "", mid or "", agent or "", bytes(data).decode()]
            )
        for index, table in enumerate(TABLES, start=1):
            columns = _KEY_COLUMNS[table]
            where = " AND ".join(f"{column} = ?" for column in columns)
            select = f"SELECT {', '.join(_COLUMNS[table])} FROM {table} WHERE {where}"  # noqa: S608
            for key in sorted(txn.touched[table], key=str):
                row = self._db.execute(select, key).fetchone()
                if row is None:
                    ops.append(["d", index, _field(key), _extra_stamp(table, None, key)])
                else:
                    ops.append(
                        ["h", index, _field(key), _row_json(row), _extra_stamp(table, row, key)]
                    )
        keep_from = self._head - self._history + 1
        slack = max(64, self._history // 100)
        if keep_from - self._oldest >= slack:
            ops.append(["t", str(keep_from)])
        return ops

    def _committed(self, reply: Any, flight: _InFlight, started: float) -> None:
        ok, version = int(reply[0]), int(reply[1])
        if self._in_flight is not flight:
            return  # the tail already applied it and fired the batch
        if not ok and version < flight.version:  # (the tail may be ahead of the reply by now)
            self._in_flight = None
            self._fail(flight.batch, StoreUnavailable("redis lost its data; reloading"))
            self._lost(version)
            return
        if not ok and version == flight.version:
            # A guard failed on a state the mirror claims to have: they disagree. Never
            # expected; start from what Redis holds rather than retry for ever.
            _log.error(
                "the mirror disagrees with redis at commit {version}: reloading", version=version
            )
            self._in_flight = None
            self._fail(flight.batch, StoreUnavailable("the node is reloading from redis"))
            self._reload()
            return
        if not ok:
            # Another node wrote what this batch read: run it again on the state it made.
            self.conflicts += 1
            self._in_flight = None
            self._queue[:0] = flight.batch
            self._wait_version = version
            self._schedule()
            return
        self._problem = None
        if self._on_commit is not None:
            self._on_commit(self._clock.seconds() - started, len(flight.batch))
        if not flight.ops:
            self._finish(flight)  # it wrote nothing: there is no commit to apply
            return
        flight.committed, flight.shift = version, int(reply[2])
        self.moved += bool(flight.shift)
        if flight.shift == 0 and self._version == version - 1:
            # Nobody committed in between: the ops are what Redis holds, apply them now.
            self._apply(flight.ops, version)
            self._finish(flight)
        elif self._version >= version:
            self._settle_loaded(flight)  # a reload meanwhile brought it into the mirror
        # Otherwise the tail applies the commit (with the seqs the script gave it) in its turn
        # and finishes the batch then; nothing else is computed on the mirror meanwhile.

    def _settle_loaded(self, flight: _InFlight) -> None:
        """Finish a committed batch that a reload, not the tail, brought into the mirror."""
        count = sum(1 for op in flight.ops if op[0] == "j")
        stored = self.read(flight.base + flight.shift, None, count)
        if len(stored) < count:  # trimmed away meanwhile: stored, but its frames are gone
            self._in_flight = None
            self._fail(flight.batch, StoreUnavailable("the node reloaded; send again"))
            self._schedule()
            return
        self._finish(flight, flight.shift, stored)

    def _commit_failed(self, failure: Failure, flight: _InFlight) -> None:
        if self._in_flight is not flight:
            return
        self._in_flight = None
        if failure.check(txredisapi.ScriptDoesNotExist):
            # Redis restarted (its script cache is empty) and nothing was written: load the
            # script again and run the batch once more.
            self._queue[:0] = flight.batch
            loading = self._redis.script_load(COMMIT_SCRIPT)
            loading.addCallback(self._script_loaded)
            loading.addErrback(self._script_failed)
            return
        reason = f"redis commit failed: {failure.getErrorMessage()}"
        if not failure.check(txredisapi.ConnectionError):
            self._problem = reason  # Redis answered, and refused: until a commit succeeds
        _log.error("redis commit failed, batch refused as unavailable: {error}", error=reason)
        self._fail(flight.batch, StoreUnavailable(reason))
        self._schedule()

    def _script_loaded(self, sha: str) -> None:
        self._commit_sha = sha
        self._schedule()

    def _script_failed(self, failure: Failure) -> None:
        self._refuse_queue(f"redis unavailable: {failure.getErrorMessage()}")

    def _finish(
        self, flight: _InFlight, shift: int = 0, stored: Sequence[StoredMessage] = ()
    ) -> None:
        self._in_flight = None
        outcomes = flight.outcomes
        if shift:
            moved = {message.seq: message for message in stored}
            outcomes = [_moved(outcome, flight.base, shift, moved) for outcome in outcomes]
        self._fire(flight.batch, outcomes)
        self._schedule()

    @staticmethod
    def _fire(batch: list[tuple[Any, Deferred[Any]]], outcomes: list[Any]) -> None:
        for (_, done), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Failure):
                done.errback(outcome)
            else:
                done.callback(outcome)

    @staticmethod
    def _fail(batch: list[tuple[Any, Deferred[Any]]], error: Exception) -> None:
        failure = Failure(error)
        for _, done in batch:
            done.errback(failure)

    def _refuse_queue(self, reason: str) -> None:
        batch, self._queue = self._queue, []
        self._fail(batch, StoreUnavailable(reason))

    # -- applying commits -------------------------------------------------------------------------

    def _apply(self, ops: list[list[Any]], version: int) -> list[StoredMessage]:
        """One commit into the mirror; returns its journal entries."""
        messages: list[StoredMessage] = []
        self._db.execute("BEGIN")
        for op in ops:
            kind = op[0]
            if kind == "j":
                seq = int(op[1])
                fields = dict(zip(("type", "sender", "mid", "agent", "data"), op[2:], strict=True))
                self._insert_journal(seq, fields)
                self._head = max(self._head, seq)
                messages.append(
                    StoredMessage(seq=seq, type=op[2], data=op[6].encode(), agent=op[5] or None)
                )
            elif kind == "h":
                table = TABLES[op[1] - 1]
                self._put_row(table, json.loads(op[3]))
                self._stamps[f"{table} {op[2]}"] = version
                if op[4]:
                    self._stamps[op[4]] = version
            elif kind == "d":
                table = TABLES[op[1] - 1]
                self._delete_row(table, op[2])
                self._stamps.pop(f"{table} {op[2]}", None)
                if op[3]:
                    self._stamps[op[3]] = version
            elif kind == "t":
                self._db.execute("DELETE FROM journal WHERE seq < ?", (int(op[1]),))
                self._oldest = max(self._oldest, int(op[1]))
        self._db.execute("COMMIT")
        self._version = version
        return messages

    def _tail(self) -> None:
        self._tail_call = None
        if self._closed:
            return
        generation = self._tail_generation
        d = self._tail_redis.execute_command(
            "XREAD",
            "COUNT",
            256,
            "BLOCK",
            TAIL_BLOCK_MS,
            "STREAMS",
            self._keys["commits"],
            f"{self._version}-0",
        )
        d.addCallbacks(self._tailed, self._tail_failed, (generation,), None, (generation,))

    def _tailed(self, reply: Any, generation: int) -> None:
        if self._closed or generation != self._tail_generation:
            return  # closed, or a reload started a new tail
        for _, entries in reply or ():
            for entry_id, raw in entries:
                version = int(entry_id.split("-")[0])
                if version <= self._version:
                    continue
                if version != self._version + 1:
                    self._resync(version)
                    return
                fields = _fields(raw)
                self._applied(
                    json.loads(fields["ops"]), version, fields["nonce"], int(fields["shift"])
                )
        if self._version >= self._wait_version:
            self._wait_version = 0
            self._schedule()
        self._tail_call = self._clock.callLater(0, self._tail)

    def _applied(self, ops: list[list[Any]], version: int, nonce: str, shift: int) -> None:
        flight = self._in_flight
        messages = self._apply(ops, version)
        if flight is not None and flight.nonce == nonce:
            self._finish(flight, shift, messages)
            return
        dropped = any(
            op[0] == "d" and op[1] == 5 and op[2].startswith(self.node + " ") for op in ops
        )
        self.on_foreign(messages, dropped)

    def _tail_failed(self, failure: Failure, generation: int) -> None:
        if self._closed or generation != self._tail_generation:
            return
        _log.debug("tailing redis failed: {error}", error=failure.getErrorMessage())
        self._tail_call = self._clock.callLater(0.2, self._tail)

    def _resync(self, version: int) -> None:
        """The commits this node missed were trimmed away: reload, and let clients reconnect."""
        _log.error(
            "node {node} fell behind the retained commits ({have} < {need}): reloading",
            node=self.node,
            have=self._version,
            need=version - 1,
        )
        self._reload()

    def _lost(self, version: int) -> None:
        _log.error(
            "redis went back from commit {have} to {now} (its data was lost or replaced):"
            " reloading with a new epoch",
            have=self._version,
            now=version,
        )
        self._reload()

    def verify(self) -> None:
        """Notice a Redis that lost its data even while this node writes nothing (the heartbeat
        calls this): its commit counter went back."""
        if not self._loaded or not self.reachable():
            return
        # Compared with what the mirror had applied when asking: the tail may have applied newer
        # commits by the time the answer comes.
        applied = self._version
        d = self._redis.execute_command("GET", self._keys["version"])

        def compare(value: Any) -> None:
            if self._loaded and int(value or 0) < applied:
                self._lost(int(value or 0))

        d.addCallbacks(compare, lambda _: None)

    def _reload(self) -> None:
        """Load the state afresh, then let the hub's clients reconnect (they resume)."""
        if self._reloading:
            return
        self._reloading = True
        self._loaded = False
        self._tail_generation += 1
        self._load_again()

    def _load_again(self) -> None:
        def reloaded(_: Any) -> None:
            self._reloading = False
            self._loaded = True
            self._problem = None
            self._wait_version = 0
            flight = self._in_flight
            if flight is not None and flight.committed and self._version >= flight.committed:
                self._settle_loaded(flight)
            self.on_resync()
            self._tail()
            self._schedule()

        def retry(failure: Failure) -> None:
            self._problem = f"redis unavailable: {failure.getErrorMessage()}"
            self._clock.callLater(0.5, self._load_again)

        self._load().addCallbacks(reloaded, retry)

    # -- health and end -------------------------------------------------------------------------

    def reachable(self) -> bool:
        """Both connections to Redis are up."""
        return _connected(self._redis) and _connected(self._tail_redis)

    def problem(self) -> str | None:
        if not self._loaded:
            return self._problem or "loading from redis"
        if not self.reachable():
            return "redis is not reachable"
        return self._problem

    def question(self, question_id: str) -> QuestionRecord | None:
        """A committed question, read from the mirror."""
        return _Transaction(self).get_question(question_id)

    def claimed(self) -> list[QuestionRecord]:
        """Committed open questions that carry a claim."""
        return _Transaction(self).claimed_questions()

    def members_of(self, node: str) -> list[str]:
        """The agents ``node`` is recorded to hold connections of."""
        rows = self._db.execute("SELECT agent FROM members WHERE node = ? ORDER BY agent", (node,))
        return [str(row[0]) for row in rows]

    def member_nodes(self) -> list[str]:
        """Every node recorded to hold some agent's connection."""
        return [str(row[0]) for row in self._db.execute("SELECT DISTINCT node FROM members")]

    @property
    def ready(self) -> bool:
        return self._loaded

    @property
    def client(self) -> Any:
        """The command connection, for the cluster's heartbeat and node checks."""
        return self._redis

    def close(self) -> Deferred[None]:
        """Wait for the commit in flight (so what was queued is acked or refused), then hang up."""
        closing: Deferred[None] = Deferred()

        def finish() -> None:
            if self._in_flight is not None or self._queue:
                if _connected(self._redis) and self._loaded:
                    self._schedule()
                    self._clock.callLater(0.01, finish)
                    return
                self._refuse_queue("the store is closing")
            self._closed = True
            if self._tail_call is not None and self._tail_call.active():
                self._tail_call.cancel()
            hangups = [c.disconnect() for c in (self._redis, self._tail_redis) if c is not None]
            done = Deferred.fromCoroutine(_all(hangups))
            done.addBoth(lambda _: self._db.close())
            done.addBoth(lambda _: closing.callback(None))

        finish()
        return closing


@attrs.define
class _InFlight:
    nonce: str
    batch: list[tuple[Any, Deferred[Any]]]
    outcomes: list[Any]
    base: int  # the head the batch was computed at: seqs above it are this batch's own
    version: int  # the commit the mirror was at
    ops: list[list[Any]]
    head: int
    committed: int = 0  # the commit's version, once Redis took it
    shift: int = 0  # how far the script moved the batch's seqs


def _moved(outcome: Any, base: int, shift: int, stored: Mapping[int, StoredMessage]) -> Any:
    """An outcome computed with the seqs the mirror predicted, given the ones the script assigned
    (``shift`` later, for every seq above ``base``): what the hub acks and relays."""
    if isinstance(outcome, StoredMessage):
        return stored[outcome.seq + shift] if outcome.seq > base else outcome
    if isinstance(outcome, Accepted):
        return attrs.evolve(
            outcome,
            seq=outcome.seq + shift if outcome.seq > base else outcome.seq,
            deliveries=tuple(_moved(m, base, shift, stored) for m in outcome.deliveries),
        )
    if isinstance(outcome, list):
        return [_moved(item, base, shift, stored) for item in outcome]
    if isinstance(outcome, tuple):
        return tuple(_moved(item, base, shift, stored) for item in outcome)
    return outcome  # a Failure, None, or a value without seqs


def _fields(flat: Sequence[str]) -> dict[str, str]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def _sleep(clock: IReactorTime, seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    clock.callLater(seconds, d.callback, None)
    return d


async def _all(deferreds: list[Deferred[Any]]) -> None:
    for d in deferreds:
        try:
            await d
        except Exception:  # noqa: S110 (hanging up: nothing left to do about it)
            pass
