//! The Lua scripts that keep every move between lists atomic, and the calls that run them.

use redis::Script;

use crate::errors::RedisSourceError;
use crate::job::Job;

use super::source::RedisSource;

/// Hands jobs back, at most once each. First forgets the tokens of hand-backs confirmed since
/// the last call (`ARGV[1]` = how many, then the tokens). Then for each (receipt, value, token)
/// triple, last first: a token already recorded is a retry of a hand-back that was applied (its
/// answer was lost): skip it, even if the same bytes were fetched again meanwhile and are
/// running. Otherwise take the delivery out of the processing list and push the value at the
/// head of the queue, so the first job is fetched first again, and record the token. A delivery
/// no longer there was handed back otherwise (orphan recovery): skip it. An empty receipt is a
/// job this process never took: push it. Returns how many were skipped.
pub(super) const REQUEUE: &str = r"
local forget = tonumber(ARGV[1])
for i = 2, forget + 1 do
  redis.call('SREM', KEYS[3], ARGV[i])
end
local skipped = 0
for i = #ARGV - 2, forget + 2, -3 do
  local receipt, value, token = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('SISMEMBER', KEYS[3], token) == 1 then
    skipped = skipped + 1
  elseif receipt == '' or redis.call('LREM', KEYS[1], 1, receipt) == 1 then
    redis.call('LPUSH', KEYS[2], value)
    redis.call('SADD', KEYS[3], token)
  else
    skipped = skipped + 1
  end
end
return skipped
";

/// Moves one delivery out of the processing list to the tail (retry) or head (dead) of a list.
pub(super) const MOVE: &str = r"
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  if ARGV[3] == 'tail' then
    redis.call('RPUSH', KEYS[2], ARGV[2])
  else
    redis.call('LPUSH', KEYS[2], ARGV[2])
  end
  return 1
end
return 0
";

/// Recovers a process's processing list: unless forced, only if its lease has expired (checked
/// here, atomically). Moves every job back to the head of the queue, oldest first, unregisters
/// the process, drops its hand-back records, and returns what it moved (nil if the process is
/// alive).
pub(super) const RECOVER: &str = r"
if ARGV[2] ~= '1' and redis.call('EXISTS', KEYS[4]) == 1 then
  return false
end
local moved = {}
while true do
  local value = redis.call('RPOPLPUSH', KEYS[1], KEYS[2])
  if not value then break end
  moved[#moved + 1] = value
end
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[5])
return moved
";

/// Refreshes this process's lease and registers it (again) in the process set, atomically:
/// a process whose lease lapsed once and whose jobs a peer recovered (which unregisters it) is
/// registered again by its next beat, so its jobs are recovered when it really dies. Returns 1
/// if the process had been unregistered.
pub(super) const BEAT: &str = r"
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
return redis.call('SADD', KEYS[2], ARGV[1])
";

/// The scripts, loaded once per source.
#[derive(Debug)]
pub(super) struct Scripts {
    pub(super) requeue: Script,
    pub(super) move_one: Script,
    pub(super) recover: Script,
    pub(super) beat: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        Scripts {
            requeue: Script::new(REQUEUE),
            move_one: Script::new(MOVE),
            recover: Script::new(RECOVER),
            beat: Script::new(BEAT),
        }
    }
}

impl RedisSource {
    pub(super) async fn recover(
        &self,
        process: &str,
        force: bool,
    ) -> Result<Option<Vec<Job>>, RedisSourceError> {
        let keys = &self.inner.keys;
        let mut invocation = self.inner.scripts.recover.prepare_invoke();
        invocation
            .key(keys.processing_of(process))
            .key(&keys.queue)
            .key(&keys.processes)
            .key(keys.alive_of(process))
            .key(keys.requeued_of(process))
            .arg(process)
            .arg(if force { "1" } else { "0" });
        let mut conn = self.conn().await?;
        let moved: Option<Vec<Vec<u8>>> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|error| self.broken("recover (script)", error))?;
        Ok(moved.map(|values| {
            values
                .into_iter()
                .map(|raw| self.decode_lossy(raw))
                .collect()
        }))
    }

    pub(super) async fn move_one(
        &self,
        receipt: &[u8],
        value: &[u8],
        to: &str,
        end: &str,
        command: &'static str,
    ) -> Result<bool, RedisSourceError> {
        let mut invocation = self.inner.scripts.move_one.prepare_invoke();
        invocation
            .key(&self.inner.keys.processing)
            .key(to)
            .arg(receipt)
            .arg(value)
            .arg(end);
        let mut conn = self.conn().await?;
        let moved: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|error| self.broken(command, error))?;
        Ok(moved == 1)
    }
}
