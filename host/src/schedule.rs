//! Deploy windows and freezes: when a run may start, in the environment's
//! time zone. Pure: the caller passes the time, so tests pick any instant.

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// When runs may start: inside one of the windows (if any are set) and
/// outside every freeze.
#[derive(Debug, Clone)]
pub struct Schedule {
    time_zone: TimeZone,
    time_zone_name: String,
    windows: Vec<Window>,
    freezes: Vec<Freeze>,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            time_zone: TimeZone::UTC,
            time_zone_name: "UTC".into(),
            windows: Vec::new(),
            freezes: Vec::new(),
        }
    }
}

/// Days and hours when runs may start.
#[derive(Debug, Clone)]
pub struct Window {
    days: Vec<Weekday>,
    from: Time,
    to: Time,
}

/// Dates (inclusive) when no run may start.
#[derive(Debug, Clone)]
pub struct Freeze {
    from: Date,
    to: Date,
    reason: Option<String>,
}

/// Why a run may not start now, and when it could.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Closed {
    /// `it is Friday 16:05 Europe/Berlin, outside the deploy windows`.
    pub reason: String,
    /// The next instant a run may start, if one comes within a year.
    pub next_open: Option<String>,
    /// That instant, for a run that waits for it.
    pub opens_at: Option<Timestamp>,
}

impl Schedule {
    /// A schedule in a time zone (IANA name).
    pub fn new(time_zone: Option<&str>) -> Result<Self, String> {
        let name = time_zone.unwrap_or("UTC");
        let time_zone = TimeZone::get(name)
            .map_err(|_| format!("`{name}` is not a time zone; write an IANA name such as \"Europe/Berlin\" or \"UTC\""))?;
        Ok(Schedule {
            time_zone,
            time_zone_name: name.to_owned(),
            ..Schedule::default()
        })
    }

    /// Adds a window: `days` like `mon`, `tue`; times `HH:MM`.
    pub fn add_window(&mut self, days: &[String], from: &str, to: &str) -> Result<(), String> {
        let days = days
            .iter()
            .map(|day| parse_weekday(day))
            .collect::<Result<Vec<_>, _>>()?;
        if days.is_empty() {
            return Err("a window needs at least one day".into());
        }
        let from = parse_time(from)?;
        let to = parse_time(to)?;
        if to <= from {
            return Err(format!("the window ends ({to}) before it starts ({from})"));
        }
        self.windows.push(Window { days, from, to });
        Ok(())
    }

    /// Adds a freeze from `from` to `to`, both `YYYY-MM-DD`, inclusive.
    pub fn add_freeze(
        &mut self,
        from: &str,
        to: &str,
        reason: Option<String>,
    ) -> Result<(), String> {
        let from: Date = from
            .parse()
            .map_err(|_| format!("`{from}` is not a date; write it like 2026-12-24"))?;
        let to: Date = to
            .parse()
            .map_err(|_| format!("`{to}` is not a date; write it like 2026-12-26"))?;
        if to < from {
            return Err(format!("the freeze ends ({to}) before it starts ({from})"));
        }
        self.freezes.push(Freeze { from, to, reason });
        Ok(())
    }

    /// Whether anything restricts when runs start.
    pub fn is_unrestricted(&self) -> bool {
        self.windows.is_empty() && self.freezes.is_empty()
    }

    /// Whether a run may start at `now`.
    pub fn check(&self, now: Timestamp) -> Result<(), Closed> {
        let local = now.to_zoned(self.time_zone.clone());
        if let Some(reason) = self.why_closed(&local) {
            let next = self.next_open(&local);
            return Err(Closed {
                reason,
                next_open: next
                    .as_ref()
                    .map(|zoned| describe(zoned, &self.time_zone_name)),
                opens_at: next.map(|zoned| zoned.timestamp()),
            });
        }
        Ok(())
    }

    fn freeze_on(&self, date: Date) -> Option<&Freeze> {
        self.freezes
            .iter()
            .find(|freeze| freeze.from <= date && date <= freeze.to)
    }

    fn why_closed(&self, local: &Zoned) -> Option<String> {
        let now = describe(local, &self.time_zone_name);
        if let Some(freeze) = self.freeze_on(local.date()) {
            return Some(format!(
                "it is {now}, inside the freeze {} to {}{}",
                freeze.from,
                freeze.to,
                freeze
                    .reason
                    .as_ref()
                    .map(|reason| format!(" ({reason})"))
                    .unwrap_or_default()
            ));
        }
        if self.windows.is_empty() {
            return None;
        }
        let time = local.time();
        let inside = self.windows.iter().any(|window| {
            window.days.contains(&local.weekday()) && window.from <= time && time < window.to
        });
        if inside {
            None
        } else {
            Some(format!(
                "it is {now}, outside the deploy windows ({})",
                self.describe_windows()
            ))
        }
    }

    /// The windows as the operator wrote them: `mon-thu 09:00-17:00`.
    pub fn describe_windows(&self) -> String {
        self.windows
            .iter()
            .map(|window| {
                let days = window
                    .days
                    .iter()
                    .map(|day| weekday_name(*day))
                    .collect::<Vec<_>>()
                    .join(",");
                format!(
                    "{days} {}-{}",
                    window.from.strftime("%H:%M"),
                    window.to.strftime("%H:%M")
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn next_open(&self, local: &Zoned) -> Option<Zoned> {
        let start_date = local.date();
        for offset in 0..400 {
            let date = start_date
                .checked_add(jiff::Span::new().days(offset))
                .ok()?;
            if self.freeze_on(date).is_some() {
                continue;
            }
            let candidates: Vec<Time> = if self.windows.is_empty() {
                vec![Time::midnight()]
            } else {
                let mut starts: Vec<Time> = self
                    .windows
                    .iter()
                    .filter(|window| window.days.contains(&date.weekday()))
                    .map(|window| window.from)
                    .collect();
                starts.sort();
                starts
            };
            for time in candidates {
                let Ok(zoned) = date.to_datetime(time).to_zoned(self.time_zone.clone()) else {
                    continue;
                };
                if zoned > *local && self.why_closed(&zoned).is_none() {
                    return Some(zoned);
                }
            }
        }
        None
    }
}

fn describe(zoned: &Zoned, time_zone: &str) -> String {
    format!("{} {time_zone}", zoned.strftime("%A %Y-%m-%d %H:%M"))
}

fn parse_time(text: &str) -> Result<Time, String> {
    let (hour, minute) = text
        .split_once(':')
        .ok_or_else(|| format!("`{text}` is not a time of day; write it like \"09:00\""))?;
    let hour: i8 = hour
        .parse()
        .map_err(|_| format!("`{text}` is not a time of day"))?;
    let minute: i8 = minute
        .parse()
        .map_err(|_| format!("`{text}` is not a time of day"))?;
    if hour == 24 && minute == 0 {
        return Ok(Time::MAX);
    }
    Time::new(hour, minute, 0, 0)
        .map_err(|_| format!("`{text}` is not a time of day (00:00 to 24:00)"))
}

fn parse_weekday(text: &str) -> Result<Weekday, String> {
    Ok(match text.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Weekday::Monday,
        "tue" | "tuesday" => Weekday::Tuesday,
        "wed" | "wednesday" => Weekday::Wednesday,
        "thu" | "thursday" => Weekday::Thursday,
        "fri" | "friday" => Weekday::Friday,
        "sat" | "saturday" => Weekday::Saturday,
        "sun" | "sunday" => Weekday::Sunday,
        _ => {
            return Err(format!(
                "`{text}` is not a day of the week; write mon, tue, wed, thu, fri, sat or sun"
            ));
        }
    })
}

fn weekday_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Monday => "mon",
        Weekday::Tuesday => "tue",
        Weekday::Wednesday => "wed",
        Weekday::Thursday => "thu",
        Weekday::Friday => "fri",
        Weekday::Saturday => "sat",
        Weekday::Sunday => "sun",
    }
}

/// The time now, or `RUNBOOK_NOW` (RFC 3339) when set, for rehearsing a
/// run at another time.
pub fn now() -> Timestamp {
    std::env::var("RUNBOOK_NOW")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(Timestamp::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RISKCAST seed: no Fridays or weekends, Thursday before 2 pm only.
    fn riskcast() -> Schedule {
        let mut schedule = Schedule::new(Some("Europe/Berlin")).unwrap();
        let days = |names: &[&str]| {
            names
                .iter()
                .map(|name| (*name).to_owned())
                .collect::<Vec<_>>()
        };
        schedule
            .add_window(&days(&["mon", "tue", "wed"]), "09:00", "17:00")
            .unwrap();
        schedule
            .add_window(&days(&["thu"]), "09:00", "14:00")
            .unwrap();
        schedule
            .add_freeze("2026-12-24", "2026-12-26", Some("holidays".into()))
            .unwrap();
        schedule
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn a_tuesday_morning_is_inside_the_window() {
        assert!(riskcast().check(at("2026-11-24T09:30:00+01:00")).is_ok());
    }

    #[test]
    fn thursday_afternoon_is_closed_until_monday_morning() {
        let closed = riskcast()
            .check(at("2026-11-26T14:30:00+01:00"))
            .unwrap_err();
        assert!(
            closed.reason.contains("outside the deploy windows"),
            "{}",
            closed.reason
        );
        assert_eq!(
            closed.next_open.as_deref(),
            Some("Monday 2026-11-30 09:00 Europe/Berlin")
        );
    }

    #[test]
    fn the_window_is_read_in_the_environment_time_zone() {
        // 08:30 UTC is 09:30 in Berlin in winter: open.
        assert!(riskcast().check(at("2026-11-24T08:30:00Z")).is_ok());
        // 16:30 UTC is 17:30 in Berlin: closed.
        assert!(riskcast().check(at("2026-11-24T16:30:00Z")).is_err());
    }

    #[test]
    fn a_freeze_closes_even_an_open_window_and_names_its_reason() {
        let closed = riskcast()
            .check(at("2026-12-24T10:00:00+01:00"))
            .unwrap_err();
        assert!(
            closed
                .reason
                .contains("freeze 2026-12-24 to 2026-12-26 (holidays)"),
            "{}",
            closed.reason
        );
        assert_eq!(
            closed.next_open.as_deref(),
            Some("Monday 2026-12-28 09:00 Europe/Berlin")
        );
    }

    #[test]
    fn bad_days_times_zones_and_dates_are_refused() {
        let mut schedule = Schedule::new(None).unwrap();
        assert!(
            schedule
                .add_window(&["funday".into()], "09:00", "17:00")
                .is_err()
        );
        assert!(
            schedule
                .add_window(&["mon".into()], "9am", "17:00")
                .is_err()
        );
        assert!(
            schedule
                .add_window(&["mon".into()], "17:00", "09:00")
                .is_err()
        );
        assert!(
            schedule
                .add_freeze("24.12.2026", "2026-12-26", None)
                .is_err()
        );
        assert!(Schedule::new(Some("Mars/Olympus")).is_err());
    }
}
