//! When to take a new base snapshot: a cron expression (the `cron` crate's form,
//! seconds first) or a preset.

use chrono::Utc;
use std::str::FromStr;

/// A schedule (base_every, drill_every) that does not parse.
#[derive(Debug, Clone, thiserror::Error)]
#[error("schedule {text:?}: {reason} (use 15m, 30m, 1h, 6h, 12h, 24h or a cron expression, seconds first)")]
pub struct ScheduleError {
    text: String,
    reason: String,
}

#[derive(Debug, Clone)]
pub struct BaseSchedule {
    schedule: cron::Schedule,
    pub text: String,
}

impl BaseSchedule {
    /// `15m`, `30m`, `1h`, `6h`, `12h`, `24h`, or a cron expression such as
    /// `0 0 */6 * * *` (sec min hour day month weekday).
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        let expr = match text {
            "15m" => "0 */15 * * * *",
            "30m" => "0 */30 * * * *",
            "1h" => "0 0 * * * *",
            "6h" => "0 0 */6 * * *",
            "12h" => "0 0 */12 * * *",
            "24h" => "0 0 0 * * *",
            other => other,
        };
        let schedule = cron::Schedule::from_str(expr).map_err(|e| ScheduleError {
            text: text.into(),
            reason: e.to_string(),
        })?;
        Ok(BaseSchedule {
            schedule,
            text: text.into(),
        })
    }

    /// How long until the next base is due.
    pub fn until_next(&self) -> std::time::Duration {
        self.schedule
            .upcoming(Utc)
            .next()
            .and_then(|t| (t - Utc::now()).to_std().ok())
            .unwrap_or(std::time::Duration::from_secs(3600))
    }

    /// The last time it was due within the past 25 hours (Unix seconds),
    /// if any.
    pub fn last_due(&self) -> Option<u64> {
        let now = Utc::now();
        self.schedule
            .after(&(now - chrono::Duration::hours(25)))
            .take_while(|t| *t <= now)
            .last()
            .and_then(|t| u64::try_from(t.timestamp()).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_expressions() {
        for p in ["15m", "30m", "1h", "6h", "12h", "24h", "*/5 * * * * *"] {
            let s = BaseSchedule::parse(p).unwrap();
            assert!(
                s.until_next() <= std::time::Duration::from_secs(86_400),
                "{p}"
            );
        }
        let every_hour = BaseSchedule::parse("1h").unwrap();
        let last = every_hour.last_due().expect("due within 25 h");
        let now = Utc::now().timestamp() as u64;
        assert!(last <= now && now - last <= 3600, "{last} {now}");
        assert!(BaseSchedule::parse("every tuesday")
            .unwrap_err()
            .to_string()
            .contains("use 15m"));
    }
}
