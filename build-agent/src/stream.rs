//! Redis stream plumbing for the consumer group: group creation, reads (own pending, new,
//! auto-claim), heartbeats, acknowledgement and the dead-letter stream. (The attempts counted
//! against a job: `attempts`.)

use redis::aio::ConnectionManager;
use redis::{RedisResult, Value};

/// One stream entry: id and raw fields (values may be any bytes).
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    /// None when the entry was deleted from the stream but is still pending.
    pub fields: Option<Vec<(String, Vec<u8>)>>,
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.as_bytes().to_vec()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    bytes(v).map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn parse_entry(v: &Value) -> Option<Entry> {
    let Value::Array(parts) = v else { return None };
    let id = text(parts.first()?)?;
    let fields = match parts.get(1) {
        Some(Value::Array(kv)) => Some(
            kv.chunks(2)
                .filter_map(|c| Some((text(&c[0])?, bytes(c.get(1)?)?)))
                .collect(),
        ),
        Some(Value::Map(kv)) => Some(
            kv.iter()
                .filter_map(|(k, v)| Some((text(k)?, bytes(v)?)))
                .collect(),
        ),
        _ => None,
    };
    Some(Entry { id, fields })
}

fn parse_entries(v: &Value) -> Vec<Entry> {
    match v {
        Value::Array(items) => items.iter().filter_map(parse_entry).collect(),
        _ => vec![],
    }
}

/// XREADGROUP reply: [[stream, [entries…]]] (RESP2) or a map (RESP3).
fn parse_read(v: &Value) -> Vec<Entry> {
    match v {
        Value::Array(streams) => streams
            .iter()
            .flat_map(|s| match s {
                Value::Array(p) if p.len() == 2 => parse_entries(&p[1]),
                _ => vec![],
            })
            .collect(),
        Value::Map(m) => m.iter().flat_map(|(_, e)| parse_entries(e)).collect(),
        _ => vec![],
    }
}

#[derive(Clone)]
pub struct Stream {
    pub con: ConnectionManager,
    pub key: String,
    pub group: String,
    pub consumer: String,
    pub dead_letter: String,
}

impl Stream {
    /// Create the group at id 0 with MKSTREAM; an existing group is fine.
    pub async fn ensure_group(&self) -> RedisResult<()> {
        let mut c = self.con.clone();
        let r: RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.key)
            .arg(&self.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut c)
            .await;
        match r {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// Read with `id` ">" (new entries, blocking up to `block_ms`) or "0"/an id (own pending after it).
    pub async fn read(
        &self,
        con: &mut ConnectionManager,
        id: &str,
        count: usize,
        block_ms: Option<u64>,
    ) -> RedisResult<Vec<Entry>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count);
        if let Some(b) = block_ms {
            cmd.arg("BLOCK").arg(b);
        }
        cmd.arg("STREAMS").arg(&self.key).arg(id);
        let v: Value = cmd.query_async(con).await?;
        Ok(parse_read(&v))
    }

    /// XAUTOCLAIM entries idle longer than `min_idle_ms` from other (dead) consumers.
    pub async fn autoclaim(&self, min_idle_ms: u64, count: usize) -> RedisResult<Vec<Entry>> {
        let mut c = self.con.clone();
        let mut out = Vec::new();
        let mut cursor = "0-0".to_string();
        loop {
            let v: Value = redis::cmd("XAUTOCLAIM")
                .arg(&self.key)
                .arg(&self.group)
                .arg(&self.consumer)
                .arg(min_idle_ms)
                .arg(&cursor)
                .arg("COUNT")
                .arg(count)
                .query_async(&mut c)
                .await?;
            let Value::Array(parts) = v else { break };
            let next = parts.first().and_then(text).unwrap_or_else(|| "0-0".into());
            if let Some(e) = parts.get(1) {
                out.extend(parse_entries(e));
            }
            if next == "0-0" || out.len() >= count {
                break;
            }
            cursor = next;
        }
        Ok(out)
    }

    /// Reset the idle time of entries we hold, so no reaper claims a job that is alive.
    pub async fn heartbeat(&self, ids: &[String]) -> RedisResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut c = self.con.clone();
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(&self.key)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(0);
        for id in ids {
            cmd.arg(id);
        }
        cmd.arg("JUSTID");
        let _: Value = cmd.query_async(&mut c).await?;
        Ok(())
    }

    /// Acknowledge `id` and forget its attempts, in one transaction.
    pub async fn ack(&self, id: &str) -> RedisResult<()> {
        let mut c = self.con.clone();
        let _: Value = redis::pipe()
            .atomic()
            .cmd("XACK")
            .arg(&self.key)
            .arg(&self.group)
            .arg(id)
            .ignore()
            .cmd("HDEL")
            .arg(self.attempts_key())
            .arg(crate::attempts::fields(id))
            .ignore()
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// Copy an entry to the dead-letter stream with the reason.
    pub async fn dead_letter(&self, e: &Entry, reason: &str, attempts: u64) -> RedisResult<()> {
        // a worker killed after this write and before the ack meets the entry again: it is
        // already there (among the newest), so it is not written twice
        if self.dead_lettered(&e.id).await? {
            return Ok(());
        }
        let mut c = self.con.clone();
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.dead_letter)
            .arg("MAXLEN")
            .arg("~")
            .arg(10000)
            .arg("*")
            .arg("original_id")
            .arg(&e.id)
            .arg("reason")
            .arg(reason)
            .arg("attempts")
            .arg(attempts)
            .arg("consumer")
            .arg(&self.consumer);
        for (k, v) in e.fields.iter().flatten() {
            if !["original_id", "reason", "attempts", "consumer"].contains(&k.as_str()) {
                cmd.arg(k).arg(v.as_slice());
            }
        }
        let _: String = cmd.query_async(&mut c).await?;
        Ok(())
    }

    /// `id` is among the newest dead letters (a dead letter is written just before its ack).
    async fn dead_lettered(&self, id: &str) -> RedisResult<bool> {
        let mut c = self.con.clone();
        let newest: Value = redis::cmd("XREVRANGE")
            .arg(&self.dead_letter)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(100)
            .query_async(&mut c)
            .await?;
        let Value::Array(entries) = newest else {
            return Ok(false);
        };
        Ok(entries.iter().any(|entry| {
            let Value::Array(parts) = entry else {
                return false;
            };
            let Some(Value::Array(fields)) = parts.get(1) else {
                return false;
            };
            fields.chunks(2).any(|kv| {
                bytes(&kv[0]).as_deref() == Some(b"original_id".as_slice())
                    && kv.get(1).and_then(bytes).as_deref() == Some(id.as_bytes())
            })
        }))
    }
}
