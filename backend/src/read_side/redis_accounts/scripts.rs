//! The Lua scripts that read and write the store, each atomic: a batch's rows are read with the
//! checkpoint, and written with its move only if it has not moved since.

use std::sync::LazyLock;

use eventstore::projection::LogPlace;
use redis::Script;

use super::stored::checkpoint_text;

/// The fields of an account's hash, in the order the scripts read and write them.
pub(super) const FIELDS: [&str; 11] = [
    "owner_id",
    "balance",
    "deposits",
    "withdrawals",
    "count",
    "last_transaction",
    "created_at",
    "version",
    "position",
    // Absent from hashes written before accounts had a status: those are active.
    "status",
    "status_reason",
];

/// Reads the checkpoint, whether a rebuild is under way, and the accounts whose hashes are
/// `KEYS[2..]`, in one atomic step.
pub(super) static READ_ACCOUNTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local answer = {redis.call('HGET', KEYS[1], 'checkpoint'), redis.call('HGET', KEYS[1], 'rebuilding')}
for i = 2, #KEYS do
  answer[#answer + 1] = redis.call('HMGET', KEYS[i], unpack(cjson.decode(ARGV[1])))
end
return answer
",
    )
});

/// As [`READ_ACCOUNTS`](static@READ_ACCOUNTS), for the accounts of the sorted set `KEYS[2]` whose members sort at or
/// above `ARGV[2]`, highest first, at most `ARGV[3]` of them; each row starts with its id.
/// The account hashes are named from the members (`ARGV[4]` is their key prefix): a script may
/// read keys it was not given on one Redis, and on a cluster only in its keys' slot, which these
/// share (their hash tag, [`super::SLOT_TAG`]).
pub(super) static READ_HIGHEST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local answer = {redis.call('HGET', KEYS[1], 'checkpoint'), redis.call('HGET', KEYS[1], 'rebuilding')}
local fields = cjson.decode(ARGV[1])
local members = redis.call('ZREVRANGEBYLEX', KEYS[2], '+', '[' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(members) do
  local id = string.sub(member, -36)
  local row = redis.call('HMGET', ARGV[4] .. id, unpack(fields))
  table.insert(row, 1, id)
  answer[#answer + 1] = row
end
return answer
",
    )
});

/// Lua: whether the fence `KEYS[fence]` refuses a leader of `epoch` in the history `log`: it
/// holds a higher epoch of the same history. A fence of another history (or of the older form,
/// a bare number) refuses nobody.
const FENCE_REFUSES: &str = r"
local function fence_refuses(fence_key, epoch, log)
  local fence = redis.call('GET', fence_key)
  if not fence then
    return false
  end
  local fenced_epoch, fenced_log = string.match(fence, '^(%d+)@(.*)$')
  return fenced_log == log and tonumber(epoch) < tonumber(fenced_epoch)
end
";

/// Applies a batch if the checkpoint is still `ARGV[1]` (empty: none) and no later leader of
/// this history (`ARGV[6]`) has written (`ARGV[5]`, the leader's epoch, is not below the fence),
/// moving the checkpoint to `ARGV[2]`; returns 1, or 0 having written nothing, or -1 having
/// written nothing because a key holds another type (a script that failed part-way would keep
/// what it had written). `KEYS[1]`: the projection's hash, `KEYS[2]`: every account's balances,
/// `KEYS[3]`: the fence; then per account its hash, its owner's balances before the batch and
/// after it (the same key unless its owner changed: forgotten; the old one goes once empty).
/// `ARGV[7..]`: per account its old member (empty for a new account), its new member and its
/// fields' values.
pub(super) static APPLY_BATCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            FENCE_REFUSES,
            r"
local stored = redis.call('HGET', KEYS[1], 'checkpoint') or ''
if stored ~= ARGV[1] then
  return 0
end
if fence_refuses(KEYS[3], ARGV[5], ARGV[6]) then
  return 0
end
local function holds(key, kind)
  local found = redis.call('TYPE', key).ok
  return found == 'none' or found == kind
end
if not holds(KEYS[2], 'zset') then
  return -1
end
for i = 4, #KEYS, 3 do
  if not holds(KEYS[i], 'hash') or not holds(KEYS[i + 1], 'zset') or not holds(KEYS[i + 2], 'zset') then
    return -1
  end
end
local fields = cjson.decode(ARGV[4])
local stride = 2 + #fields
for i = 0, (#KEYS - 3) / 3 - 1 do
  local account, owner_before, owner_after = KEYS[4 + 3 * i], KEYS[5 + 3 * i], KEYS[6 + 3 * i]
  local at = 7 + stride * i
  local old, new = ARGV[at], ARGV[at + 1]
  local pairs = {}
  for f = 1, #fields do
    pairs[#pairs + 1] = fields[f]
    pairs[#pairs + 1] = ARGV[at + 1 + f]
  end
  redis.call('HSET', account, unpack(pairs))
  if old ~= '' then
    redis.call('ZREM', KEYS[2], old)
    redis.call('ZREM', owner_before, old)
  end
  redis.call('ZADD', KEYS[2], 0, new)
  redis.call('ZADD', owner_after, 0, new)
end
redis.call('HSET', KEYS[1], 'checkpoint', ARGV[2], 'rebuilding', ARGV[3])
redis.call('SET', KEYS[3], ARGV[5] .. '@' .. ARGV[6])
return 1
",
        ]
        .concat(),
    )
});

/// The checkpoint while the store is being cleared: of no history, so that no batch applies to
/// it, no query reads it, and a clear that stopped half-way is noticed and done again.
pub(super) static CLEARING: LazyLock<String> =
    LazyLock::new(|| checkpoint_text(eventstore::projection::CLEARING_LOG, LogPlace::START));

/// Starts a clear: raises the fence to `ARGV[1]` of the history `ARGV[3]` (unless a later
/// leader of that history has written: then 0) and puts [`CLEARING`] in the checkpoint's place.
/// `KEYS[1]`: the projection's hash, `KEYS[2]`: the fence.
pub(super) static BEGIN_CLEAR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            FENCE_REFUSES,
            r"
if fence_refuses(KEYS[2], ARGV[1], ARGV[3]) then
  return 0
end
redis.call('SET', KEYS[2], ARGV[1] .. '@' .. ARGV[3])
redis.call('HSET', KEYS[1], 'checkpoint', ARGV[2], 'rebuilding', '1')
return 1
",
        ]
        .concat(),
    )
});

/// Removes the next keys of a `SCAN` (cursor `ARGV[1]`, pattern `ARGV[2]`) but the projection's
/// hash and the fence, and returns the next cursor and how many it removed — unless the
/// checkpoint is no longer [`CLEARING`](static@CLEARING) (`ARGV[3]`): someone finished the clear
/// and began to build anew, so it removes nothing and answers nil. A former leader waking mid-way
/// cannot delete its successor's work.
pub(super) static CLEAR_SOME: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], 'checkpoint') ~= ARGV[3] then
  return false
end
local found = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', 1000)
local removed = 0
for _, key in ipairs(found[2]) do
  if key ~= KEYS[1] and key ~= KEYS[2] then
    redis.call('UNLINK', key)
    removed = removed + 1
  end
end
return {found[1], removed}
",
    )
});

/// Ends a clear: the store holds nothing, not even a checkpoint, if it is still
/// [`CLEARING`](static@CLEARING).
pub(super) static END_CLEAR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], 'checkpoint') == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
",
    )
});

/// Starts retiring a partition (its projection's hash `KEYS[1]`): puts
/// [`CLEARING`](static@CLEARING) (`ARGV[1]`) in its checkpoint's place and returns 1 — unless
/// the checkpoint is of the history being built now (it starts with `ARGV[2]`, unless that is
/// empty): that partition is the same count's, adopted again, and it returns 0.
pub(super) static RETIRE_BEGIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local checkpoint = redis.call('HGET', KEYS[1], 'checkpoint')
if checkpoint and ARGV[2] ~= '' and string.sub(checkpoint, 1, #ARGV[2]) == ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], 'checkpoint', ARGV[1])
return 1
",
    )
});
