//! The attempts counted against a job, so that only a job that keeps dying at the same point is
//! dead-lettered. An attempt counts when it starts (SIGKILL and OOM leave no chance to count it
//! later). Each attempt leaves marks as it goes — a stage reached, a build step begun — and a mark
//! past every mark of the attempts before it is progress: the count starts again. The first
//! attempt has nothing before it to pass, so a job that kills the worker at one point each time is
//! dead-lettered after its third start, while one that gets further each time is not.
//!
//! Kept in the stream's `{stream}:attempts` hash: `{id}` the count, `{id}:reached` the furthest
//! mark of any attempt, `{id}:floor` the furthest mark of the attempts before the current one.
//! Each change is one Lua script: two workers never interleave their reads and writes.

use crate::report::Stage;
use crate::stream::Stream;
use redis::RedisResult;

/// How far an attempt got: its stage, then the build step within the building stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mark(u64);

impl Mark {
    /// A stage reached (a later stage is further; a terminal one ends the job anyway).
    pub fn stage(s: Stage) -> Mark {
        Mark(
            match s {
                Stage::Received => 1,
                Stage::Building => 2,
                Stage::Deploying => 3,
                Stage::Registering => 4,
                Stage::Done | Stage::Failed => 5,
            } * 100_000,
        )
    }

    /// Step `n` of the image's build begun (the steps before it are in the build cache now).
    pub fn build_step(n: u64) -> Mark {
        Mark(Mark::stage(Stage::Building).0 + n.min(99_999))
    }
}

/// The step a line of `docker build`'s output begins: `Step 3/6 : RUN …` (the legacy builder)
/// or `#7 [2/4] RUN …` (BuildKit).
pub fn build_step(line: &str) -> Option<u64> {
    let rest = match line.strip_prefix("Step ") {
        Some(r) => r,
        None => line.strip_prefix('#')?.split_once(" [")?.1,
    };
    let (n, total) = rest.split_once('/')?;
    let total_digits = total.bytes().take_while(u8::is_ascii_digit).count();
    (total_digits > 0).then(|| n.trim().parse().ok()).flatten()
}

/// The fields of `id` in the attempts hash (all of them go when the job is acknowledged).
pub fn fields(id: &str) -> Vec<String> {
    vec![
        id.to_string(),
        format!("{id}:reached"),
        format!("{id}:floor"),
    ]
}

/// KEYS[1] the hash, ARGV[1] the id: remember the furthest mark so far as the floor this attempt
/// must pass, count the attempt, return the count.
const START: &str = r"
local reached = redis.call('HGET', KEYS[1], ARGV[1] .. ':reached')
if reached then redis.call('HSET', KEYS[1], ARGV[1] .. ':floor', reached) end
return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)";

/// KEYS[1] the hash, ARGV[1] the id, ARGV[2] a mark: keep the furthest mark; past the floor, the
/// count starts again. Returns 1 when it did. (Nothing for a job not counted: acknowledged.)
const REACHED: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local mark = tonumber(ARGV[2])
local reached = tonumber(redis.call('HGET', KEYS[1], ARGV[1] .. ':reached') or '0')
if mark > reached then redis.call('HSET', KEYS[1], ARGV[1] .. ':reached', ARGV[2]) end
local floor = redis.call('HGET', KEYS[1], ARGV[1] .. ':floor')
if floor and mark > tonumber(floor) then
  redis.call('HSET', KEYS[1], ARGV[1], 0)
  return 1
end
return 0";

impl Stream {
    /// The hash of attempts counted against pending entries. Redis's delivery count also counts
    /// every re-read after a restart and every claim, so a healthy job queued behind a crashing
    /// one would run out of deliveries without ever starting.
    pub fn attempts_key(&self) -> String {
        format!("{}:attempts", self.key)
    }

    /// Count one more started attempt of `id`; returns the attempts counted against it.
    pub async fn start_attempt(&self, id: &str) -> RedisResult<u64> {
        let mut c = self.con.clone();
        redis::cmd("EVAL")
            .arg(START)
            .arg(1)
            .arg(self.attempts_key())
            .arg(id)
            .query_async(&mut c)
            .await
    }

    /// The attempts counted against `id` (0 for a job that never started, or made progress in
    /// its last attempt).
    pub async fn attempts(&self, id: &str) -> RedisResult<u64> {
        let mut c = self.con.clone();
        let n: Option<u64> = redis::cmd("HGET")
            .arg(self.attempts_key())
            .arg(id)
            .query_async(&mut c)
            .await?;
        Ok(n.unwrap_or(0))
    }

    /// The furthest mark any attempt of `id` left (None: none yet).
    pub async fn furthest(&self, id: &str) -> RedisResult<Option<Mark>> {
        let mut c = self.con.clone();
        let m: Option<u64> = redis::cmd("HGET")
            .arg(self.attempts_key())
            .arg(format!("{id}:reached"))
            .query_async(&mut c)
            .await?;
        Ok(m.map(Mark))
    }

    /// The running attempt of `id` got to `mark`; true when that is progress (the count
    /// started again).
    pub async fn reached(&self, id: &str, mark: Mark) -> RedisResult<bool> {
        let mut c = self.con.clone();
        let progress: i64 = redis::cmd("EVAL")
            .arg(REACHED)
            .arg(1)
            .arg(self.attempts_key())
            .arg(id)
            .arg(mark.0)
            .query_async(&mut c)
            .await?;
        Ok(progress == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_steps_are_read_from_both_builders_and_nothing_else() {
        assert_eq!(build_step("Step 3/6 : RUN chmod +x /agent.sh"), Some(3));
        assert_eq!(
            build_step("#7 [2/4] RUN pip install -r requirements.txt"),
            Some(2)
        );
        assert_eq!(build_step("#7 [builder 2/4] RUN make"), None);
        assert_eq!(build_step(" ---> Running in 43ca4c2b4d9f"), None);
        assert_eq!(build_step("Step x/6 : RUN"), None);
        assert_eq!(build_step("#3 DONE 0.1s"), None);
        assert_eq!(build_step("Step 3/ : RUN"), None);
    }

    #[test]
    fn marks_order_stages_then_build_steps() {
        assert!(Mark::stage(Stage::Received) < Mark::build_step(0));
        assert!(Mark::build_step(1) < Mark::build_step(2));
        assert!(Mark::build_step(u64::MAX) < Mark::stage(Stage::Deploying));
        assert!(Mark::stage(Stage::Deploying) < Mark::stage(Stage::Registering));
        assert_eq!(Mark::stage(Stage::Building), Mark::build_step(0));
    }
}
