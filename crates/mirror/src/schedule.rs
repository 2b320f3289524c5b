//! Mirror snapshot schedules (`mirror snapshot schedule add|remove|ls|status`), kept in the
//! config-key `rbd/mirror/snapshot_schedule` and carried out by the mirror daemon of the site
//! where the images are primary. Only the most specific level with schedules applies to an
//! image: the image's own, else its namespace's, else its pool's, else the global ones.

use std::sync::Arc;

use bytes::Bytes;
use rbdx_image::{Error, Result};
use rbdx_objstore::{ErrorKind as StoreKind, ObjectStore};
use serde::{Deserialize, Serialize};

/// The config-key holding the schedules.
pub const KEY: &str = "rbd/mirror/snapshot_schedule";

/// One schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Pool name (empty: every pool).
    pub pool: String,
    /// Namespace (empty: the default one, or all when the pool is empty).
    pub namespace: String,
    /// Image name (empty: every image of the level).
    pub image: String,
    /// `<n>m`, `<n>h` or `<n>d`.
    pub interval: String,
    /// The first time, as given (ISO 8601), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
}

impl Schedule {
    /// Returns the interval in seconds.
    pub fn interval_secs(&self) -> Result<u64> {
        parse_interval(&self.interval)
    }

    /// Returns the instant the schedule counts from (seconds since the epoch).
    pub fn anchor(&self) -> Result<i64> {
        match &self.start_time {
            Some(t) => parse_start(t),
            None => Ok(0),
        }
    }

    /// Returns the newest scheduled time at or before `now`, if any.
    pub fn last_due(&self, now: i64) -> Result<Option<i64>> {
        let every = self.interval_secs()? as i64;
        let anchor = self.anchor()?;
        if now < anchor {
            return Ok(None);
        }
        Ok(Some(anchor + (now - anchor) / every * every))
    }

    /// Returns the next scheduled time after `now`.
    pub fn next_due(&self, now: i64) -> Result<i64> {
        let every = self.interval_secs()? as i64;
        Ok(match self.last_due(now)? {
            Some(t) => t + every,
            None => self.anchor()?,
        })
    }

    /// How `schedule ls` shows it: `every 1d starting at 14:00:00-05:00`.
    pub fn describe(&self) -> String {
        let mut text = format!("every {}", self.interval);
        if let Some(t) = &self.start_time {
            text.push_str(&format!(" starting at {t}"));
        }
        text
    }

    /// 0 for a global schedule up to 3 for an image's.
    fn level(&self) -> u8 {
        if !self.image.is_empty() {
            3
        } else if !self.namespace.is_empty() {
            2
        } else if !self.pool.is_empty() {
            1
        } else {
            0
        }
    }

    fn matches(&self, pool: &str, namespace: &str, image: &str) -> bool {
        match self.level() {
            0 => true,
            1 => self.pool == pool,
            2 => self.pool == pool && self.namespace == namespace,
            _ => self.pool == pool && self.namespace == namespace && self.image == image,
        }
    }
}

/// Parses `<n>m`, `<n>h` or `<n>d` into seconds.
pub fn parse_interval(text: &str) -> Result<u64> {
    let bad = || {
        Error::invalid(format!(
            "invalid interval '{text}': a positive number with m, h or d (e.g. 30m, 6h, 1d)"
        ))
    };
    let unit = match text.chars().last() {
        Some('m') => 60,
        Some('h') => 3600,
        Some('d') => 86_400,
        _ => return Err(bad()),
    };
    let n: u64 = text[..text.len() - 1].parse().map_err(|_| bad())?;
    if n == 0 {
        return Err(bad());
    }
    Ok(n * unit)
}

/// Parses an ISO 8601 start time: `[YYYY-MM-DDT]HH:MM[:SS][Z|±HH:MM]`; a time of day alone
/// counts from 1970-01-01.
pub fn parse_start(text: &str) -> Result<i64> {
    let bad = || {
        Error::invalid(format!(
            "invalid start time '{text}': ISO 8601, e.g. 14:00:00-05:00 or 2026-12-01T00:00:00Z"
        ))
    };
    let (date, time) = match text.split_once('T') {
        Some((d, t)) => (Some(d), t),
        None => (None, text),
    };
    let days = match date {
        Some(d) => {
            let parts: Vec<&str> = d.split('-').collect();
            let [y, m, day] = parts.as_slice() else {
                return Err(bad());
            };
            let (y, m, day): (i64, u32, u32) = (
                y.parse().map_err(|_| bad())?,
                m.parse().map_err(|_| bad())?,
                day.parse().map_err(|_| bad())?,
            );
            if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
                return Err(bad());
            }
            days_from_civil(y, m, day)
        }
        None => 0,
    };
    let (clock, offset) = if let Some(c) = time.strip_suffix('Z') {
        (c, 0)
    } else if let Some(i) = time.rfind(['+', '-']) {
        let (c, o) = time.split_at(i);
        let sign = if o.starts_with('-') { -1 } else { 1 };
        let o = &o[1..];
        let (h, m) = o.split_once(':').unwrap_or((o, "0"));
        let h: i64 = h.parse().map_err(|_| bad())?;
        let m: i64 = m.parse().map_err(|_| bad())?;
        (c, sign * (h * 3600 + m * 60))
    } else {
        (time, 0)
    };
    let fields: Vec<&str> = clock.split(':').collect();
    if !(2..=3).contains(&fields.len()) {
        return Err(bad());
    }
    let mut secs = 0i64;
    for (i, f) in fields.iter().enumerate() {
        let v: i64 = f.parse().map_err(|_| bad())?;
        let limit = if i == 0 { 24 } else { 60 };
        if !(0..limit).contains(&v) {
            return Err(bad());
        }
        secs += v * [3600, 60, 1][i];
    }
    Ok(days * 86_400 + secs - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Reads every schedule.
pub async fn load(store: &Arc<dyn ObjectStore>) -> Result<Vec<Schedule>> {
    match store.config_key_get(KEY).await {
        Ok(v) => {
            serde_json::from_slice(&v).map_err(|e| Error::corrupt(format!("config-key {KEY}: {e}")))
        }
        Err(e) if e.kind() == StoreKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::store(format!("cannot read config-key {KEY}"), e)),
    }
}

/// Writes every schedule.
pub async fn save(store: &Arc<dyn ObjectStore>, schedules: &[Schedule]) -> Result<()> {
    let json = serde_json::to_vec(schedules).unwrap_or_default();
    store
        .config_key_set(KEY, Bytes::from(json))
        .await
        .map_err(|e| Error::store(format!("cannot set config-key {KEY}"), e))
}

/// Returns the schedules that apply to image `image` of `pool`/`namespace`: those of the
/// most specific level that has any.
pub fn applying<'a>(
    schedules: &'a [Schedule],
    pool: &str,
    namespace: &str,
    image: &str,
) -> Vec<&'a Schedule> {
    let matching: Vec<&Schedule> = schedules
        .iter()
        .filter(|s| s.matches(pool, namespace, image))
        .collect();
    let Some(top) = matching.iter().map(|s| s.level()).max() else {
        return Vec::new();
    };
    matching.into_iter().filter(|s| s.level() == top).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(pool: &str, image: &str, interval: &str, start: Option<&str>) -> Schedule {
        Schedule {
            pool: pool.into(),
            namespace: String::new(),
            image: image.into(),
            interval: interval.into(),
            start_time: start.map(str::to_owned),
        }
    }

    #[test]
    fn intervals_and_start_times_parse() {
        assert_eq!(parse_interval("30m").unwrap(), 1800);
        assert_eq!(parse_interval("1d").unwrap(), 86_400);
        assert!(parse_interval("5s").is_err());
        assert!(parse_interval("0h").is_err());
        assert_eq!(parse_start("14:00:00-05:00").unwrap(), 19 * 3600);
        assert_eq!(parse_start("2026-12-06T02:23:03Z").unwrap(), 1_796_523_783);
        assert!(parse_start("25:00").is_err());
    }

    #[test]
    fn the_most_specific_level_applies() {
        let all = vec![
            schedule("", "", "1d", None),
            schedule("p", "", "6h", None),
            schedule("p", "img", "1h", None),
        ];
        assert_eq!(applying(&all, "p", "", "img")[0].interval, "1h");
        assert_eq!(applying(&all, "p", "", "other")[0].interval, "6h");
        assert_eq!(applying(&all, "q", "", "x")[0].interval, "1d");
    }

    #[test]
    fn due_times_follow_the_anchor() {
        let s = schedule("p", "", "1h", Some("00:30:00Z"));
        assert_eq!(s.last_due(3600 * 5 + 100).unwrap(), Some(3600 * 4 + 1800));
        assert_eq!(s.next_due(3600 * 5 + 100).unwrap(), 3600 * 5 + 1800);
    }
}
