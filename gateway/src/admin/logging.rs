//! Run-time log levels for `/logging`. The process logs through one `log::Log`
//! that filters with `RUST_LOG`'s directives (per-module ones included) until an
//! operator picks a level, which then applies to every module, as Envoy's
//! `/logging?level=` does. `log::set_max_level` keeps disabled lines cheap.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use log::{LevelFilter, Log, Metadata, Record, SetLoggerError};

/// No operator level: `RUST_LOG`'s directives decide.
const FROM_RUST_LOG: usize = usize::MAX;

/// The operator's level, as `LevelFilter as usize`, or `FROM_RUST_LOG`.
static OVERRIDE: AtomicUsize = AtomicUsize::new(FROM_RUST_LOG);

/// The directives the process started with, for `GET /logging`.
static START_SPEC: OnceLock<String> = OnceLock::new();

const LEVELS: [LevelFilter; 6] = [
    LevelFilter::Off,
    LevelFilter::Error,
    LevelFilter::Warn,
    LevelFilter::Info,
    LevelFilter::Debug,
    LevelFilter::Trace,
];

fn override_level() -> Option<LevelFilter> {
    LEVELS.get(OVERRIDE.load(Ordering::Relaxed)).copied()
}

/// Filters with `RUST_LOG` (or the operator's level) and writes with env_logger's format.
struct Switchable {
    /// Built from `RUST_LOG`; used only for its `enabled` decision.
    filter: env_logger::Logger,
    /// Lets everything through: the decision was made above.
    writer: env_logger::Logger,
}

impl Log for Switchable {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        match override_level() {
            Some(level) => metadata.level() <= level,
            None => self.filter.enabled(metadata),
        }
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            self.writer.log(record);
        }
    }

    fn flush(&self) {
        self.writer.flush();
    }
}

/// Installs the process logger: `RUST_LOG` directives (else `default`) at start,
/// changeable at run time with [`set_level`].
pub fn init(default: &str) -> Result<(), SetLoggerError> {
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| default.to_string());
    let filter = env_logger::Builder::new().parse_filters(&spec).build();
    let mut writer = env_logger::Builder::new();
    writer.filter_level(LevelFilter::Trace);
    if let Ok(style) = std::env::var("RUST_LOG_STYLE") {
        writer.parse_write_style(&style);
    }
    let max = filter.filter();
    let _ = START_SPEC.set(spec);
    log::set_boxed_logger(Box::new(Switchable {
        filter,
        writer: writer.build(),
    }))?;
    log::set_max_level(max);
    Ok(())
}

/// Sets one level for every module (replacing `RUST_LOG`'s per-module directives).
pub fn set_level(level: LevelFilter) {
    OVERRIDE.store(level as usize, Ordering::Relaxed);
    log::set_max_level(level);
}

/// Parses a level name as `/logging?level=` takes it.
pub fn parse_level(name: &str) -> Option<LevelFilter> {
    match name.to_ascii_lowercase().as_str() {
        "off" => Some(LevelFilter::Off),
        // Envoy's names, so its runbooks carry over.
        "error" | "critical" => Some(LevelFilter::Error),
        "warn" | "warning" => Some(LevelFilter::Warn),
        "info" => Some(LevelFilter::Info),
        "debug" => Some(LevelFilter::Debug),
        "trace" => Some(LevelFilter::Trace),
        _ => None,
    }
}

/// What `GET /logging` shows: the level in force and where it comes from.
pub fn describe() -> String {
    match override_level() {
        Some(level) => format!("level: {}\nsource: /logging\n", level.to_string().to_lowercase()),
        None => format!(
            "level: {}\nsource: RUST_LOG={}\n",
            log::max_level().to_string().to_lowercase(),
            START_SPEC.get().map_or("", String::as_str)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_names() {
        assert_eq!(parse_level("DEBUG"), Some(LevelFilter::Debug));
        assert_eq!(parse_level("warning"), Some(LevelFilter::Warn));
        assert_eq!(parse_level("critical"), Some(LevelFilter::Error));
        assert_eq!(parse_level("verbose"), None);
        for (i, level) in LEVELS.iter().enumerate() {
            assert_eq!(*level as usize, i, "LEVELS is indexed by LevelFilter's value");
        }
    }
}
