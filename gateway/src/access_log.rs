//! The access log: one line per proxied request, formatted and written off
//! the serving threads.
//!
//! A serving thread only moves a compact [`Record`] (values the request
//! already holds: the method, the `PathAndQuery`, the node label's `Arc`)
//! into a bounded channel; one log thread formats records into a reused
//! buffer and writes them to stdout in batches. A full channel drops the
//! record and counts `kgw_access_log_dropped_total`: a slow log reader never
//! slows requests.
//!
//! Lines read as the `tracing` fmt layer wrote them before (same prefix,
//! field names, order and quoting), so what greps or parses them keeps
//! working; the one difference is that they are never coloured, even on a
//! terminal. The switch is unchanged too: the log is on when `RUST_LOG`
//! enables target `access` at `info`, checked once at start-up
//! ([`install_if_enabled`]).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Method;
use http::uri::PathAndQuery;

use crate::classify::TrafficClass;
use crate::text;

/// Records queued at most; past this a burst is dropped, not buffered.
const CAPACITY: usize = 4096;
/// The log thread writes once it has this many bytes, or the queue is empty.
const BATCH_BYTES: usize = 64 * 1024;
/// How long the log thread lets lines queue after a write: lines are
/// written at most this much later, and at 100k lines/s 200 are queued
/// (of [`CAPACITY`]).
const BATCH_WAIT: Duration = Duration::from_millis(2);

/// One request, as the access log line tells it.
pub struct Record {
    /// When the answer was decided (the line's timestamp).
    pub at: SystemTime,
    pub client: SocketAddr,
    pub method: Method,
    /// `None` when the request was refused before its target was read.
    pub path: Option<PathAndQuery>,
    pub class: TrafficClass,
    /// The node's label, `-` when no node was tried.
    pub upstream: Arc<str>,
    pub status: u16,
    pub elapsed: Duration,
    pub retries: u32,
    pub error: Option<String>,
}

enum Message {
    Line(Record),
    /// Sent by [`Guard`]'s drop: write what is queued, then end.
    Stop,
}

static SENDER: OnceLock<SyncSender<Message>> = OnceLock::new();

/// Whether the access log is on (installed); false in tests and benches
/// that never install it.
pub fn enabled() -> bool {
    SENDER.get().is_some()
}

/// Queues the record `make` builds, if the log is on. Never blocks: with
/// the queue full the record is dropped and counted.
pub fn emit(make: impl FnOnce() -> Record) {
    let Some(sender) = SENDER.get() else {
        return;
    };
    if let Err(TrySendError::Full(_)) = sender.try_send(Message::Line(make())) {
        metrics::counter!("kgw_access_log_dropped_total").increment(1);
    }
}

/// Ends the log thread once what is queued is written; held by `main`.
pub struct Guard {
    done: Receiver<()>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(sender) = SENDER.get() else {
            return;
        };
        // A stuck stdout must not hold up the exit for long.
        for _ in 0..100 {
            match sender.try_send(Message::Stop) {
                Err(TrySendError::Full(_)) => std::thread::sleep(Duration::from_millis(10)),
                _ => break,
            }
        }
        let _ = self.done.recv_timeout(Duration::from_secs(1));
    }
}

/// Starts the log thread writing to stdout when the installed `tracing`
/// filter enables target `access` at `info` (as `RUST_LOG` says); `None`
/// when it does not, or when the log was installed already.
pub fn install_if_enabled() -> Option<Guard> {
    if !tracing::enabled!(target: "access", tracing::Level::INFO) {
        return None;
    }
    install(std::io::stdout())
}

/// Starts the log thread writing to `out`; `None` when already installed.
pub fn install(out: impl Write + Send + 'static) -> Option<Guard> {
    let (sender, receiver) = std::sync::mpsc::sync_channel(CAPACITY);
    SENDER.set(sender).ok()?;
    let (done_tx, done) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("kgw-access-log".into())
        .spawn(move || {
            write_lines(&receiver, out);
            drop(done_tx);
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the access log thread; access lines are dropped");
    }
    Some(Guard { done })
}

/// The log thread: formats whatever is queued into one buffer, writes it
/// with one call, and waits for more.
fn write_lines(receiver: &Receiver<Message>, mut out: impl Write) {
    let mut buffer = Vec::with_capacity(BATCH_BYTES + 1024);
    let mut format = LineFormat::default();
    let mut stop = false;
    while !stop {
        let Ok(first) = receiver.recv() else {
            return;
        };
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Line(record) => format.line(&record, &mut buffer),
                Message::Stop => stop = true,
            }
            next = (!stop && buffer.len() < BATCH_BYTES)
                .then(|| receiver.try_recv().ok())
                .flatten();
        }
        // A failed write (stdout closed) loses these lines, nothing else.
        let _ = out.write_all(&buffer).and_then(|()| out.flush());
        buffer.clear();
        if !stop {
            // Let the next lines queue up: a receiver blocked in `recv` is
            // woken by every line sent, a futex wake and a context switch
            // per request under load (measured: 0.8 per line); asleep, it
            // costs the serving threads nothing and takes the lines in
            // one batch.
            std::thread::sleep(BATCH_WAIT);
        }
    }
}

/// Formats records as lines, as `tracing_subscriber::fmt` (no ANSI) would
/// write `info!(target: "access", client = %.., method = %.., path, class,
/// upstream, status, duration_ms, retries, error)`: `%` fields bare,
/// strings quoted with `Debug`. Written by hand (`crate::text`): `fmt` took
/// most of the log thread's 8,000 instructions a line.
#[derive(Default)]
pub struct LineFormat {
    /// The last second written, and its `2026-12-02T00:30:17`: most lines
    /// share it with the one before.
    second: Option<(u64, [u8; 19])>,
}

impl LineFormat {
    /// Appends `record` as one line.
    pub fn line(&mut self, record: &Record, buffer: &mut Vec<u8>) {
        self.timestamp(record.at, buffer);
        buffer.extend_from_slice(b"  INFO access: client=");
        text::push_socket_addr(buffer, record.client);
        buffer.extend_from_slice(b" method=");
        buffer.extend_from_slice(record.method.as_str().as_bytes());
        buffer.extend_from_slice(b" path=");
        text::push_debug_str(buffer, record.path.as_ref().map_or("", |pq| pq.path()));
        buffer.extend_from_slice(b" class=");
        text::push_debug_str(buffer, record.class.as_str());
        buffer.extend_from_slice(b" upstream=");
        text::push_debug_str(buffer, &record.upstream);
        buffer.extend_from_slice(b" status=");
        text::push_integer(buffer, record.status);
        buffer.extend_from_slice(b" duration_ms=");
        text::push_debug_f64(buffer, record.elapsed.as_secs_f64() * 1000.0);
        buffer.extend_from_slice(b" retries=");
        text::push_integer(buffer, record.retries);
        buffer.extend_from_slice(b" error=");
        text::push_debug_str(buffer, record.error.as_deref().unwrap_or(""));
        buffer.push(b'\n');
    }

    /// `2026-12-02T00:30:17.123456Z`, UTC with microseconds, as
    /// `tracing_subscriber`'s default timer writes it.
    fn timestamp(&mut self, at: SystemTime, buffer: &mut Vec<u8>) {
        let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        let seconds = since_epoch.as_secs();
        let date_time = match self.second {
            Some((second, date_time)) if second == seconds => date_time,
            _ => {
                let date_time = date_time(seconds);
                self.second = Some((seconds, date_time));
                date_time
            }
        };
        buffer.extend_from_slice(&date_time);
        let micros = since_epoch.subsec_micros();
        buffer.push(b'.');
        for place in [100_000, 10_000, 1_000, 100, 10, 1] {
            buffer.push(b'0' + (micros / place % 10) as u8);
        }
        buffer.push(b'Z');
    }
}

/// `2026-12-02T00:30:17` for `seconds` since the epoch.
fn date_time(seconds: u64) -> [u8; 19] {
    let (year, month, day) = civil_date((seconds / 86_400) as i64);
    let of_day = seconds % 86_400;
    let mut text = [0u8; 19];
    let _ = write!(
        &mut text[..],
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
    );
    text
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard
/// Hinnant's `civil_from_days`), to avoid a date crate for one format.
fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn record() -> Record {
        Record {
            at: UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456),
            client: "127.0.0.1:51234".parse().unwrap(),
            method: Method::POST,
            path: Some(PathAndQuery::from_static("/kylin/api/%22q%22?x=1")),
            class: TrafficClass::Query,
            upstream: Arc::from("10.0.0.7:7070"),
            status: 502,
            elapsed: Duration::from_micros(12_345),
            retries: 2,
            error: Some("connect failed: \"refused\"".into()),
        }
    }

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        let mut format = LineFormat::default();
        let mut buffer = Vec::new();
        format.timestamp(record().at, &mut buffer);
        assert_eq!(buffer, b"2023-11-14T22:13:20.123456Z");
        buffer.clear();
        // The same second again (from the cache), then another.
        format.timestamp(record().at + Duration::from_micros(7), &mut buffer);
        assert_eq!(buffer, b"2023-11-14T22:13:20.123463Z");
        buffer.clear();
        format.timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400), &mut buffer);
        assert_eq!(buffer, b"2000-02-29T00:00:00.000000Z");
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(-1), (1969, 12, 31));
    }

    /// The line `tracing_subscriber::fmt` wrote for the same event, from the
    /// level on (its timestamp is the time of the call).
    fn tracing_line(record: &Record) -> String {
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_target(true)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                target: "access",
                client = %record.client,
                method = %record.method,
                path = record.path.as_ref().map_or("", |pq| pq.path()),
                class = record.class.as_str(),
                upstream = &*record.upstream,
                status = record.status,
                duration_ms = record.elapsed.as_secs_f64() * 1000.0,
                retries = record.retries,
                error = record.error.as_deref().unwrap_or(""),
            );
        });
        let line = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        line["2023-11-14T22:13:20.123456Z".len()..].to_owned()
    }

    #[test]
    fn lines_read_as_the_tracing_fmt_layer_wrote_them() {
        let mut unrouted = record();
        unrouted.path = None;
        unrouted.error = None;
        unrouted.upstream = Arc::from("-");
        let mut format = LineFormat::default();
        for record in [record(), unrouted] {
            let mut buffer = Vec::new();
            format.line(&record, &mut buffer);
            let line = String::from_utf8(buffer).unwrap();
            let (timestamp, rest) = line.split_at("2023-11-14T22:13:20.123456Z".len());
            assert_eq!(timestamp, "2023-11-14T22:13:20.123456Z");
            assert_eq!(rest, tracing_line(&record));
        }
    }

    #[test]
    fn the_log_thread_writes_every_queued_line_then_stops() {
        let (sender, receiver) = std::sync::mpsc::sync_channel(8);
        for _ in 0..3 {
            sender.send(Message::Line(record())).unwrap();
        }
        sender.send(Message::Stop).unwrap();
        let mut out = Vec::new();
        write_lines(&receiver, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(text.lines().all(|l| l.contains(" status=502 ")), "{text}");
    }
}
