//! The per-system results CSV: written in the original's exact format, read back by header name.
//!
//! Writing sticks to `size,avg_us,p50_us,p99_us,bw_gbps` so our files drop into the original's
//! tooling. Reading is lenient about layout (column order, `size_bytes`, extra columns, no
//! bandwidth column) because the peers' CSVs come from other scripts, but strict about values:
//! a bad line is a typed error naming the file and line, never a panic or a silent zero.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use super::stats::{bw_gbps, SizeStats};

/// The header line we write, and the column names we read.
pub const CSV_HEADER: &str = "size,avg_us,p50_us,p99_us,bw_gbps";

/// One CSV line: one payload size of one system.
#[derive(Clone, Debug, PartialEq)]
pub struct CsvRow {
    /// Payload size in bytes.
    pub size: usize,
    /// Mean round-trip latency, µs.
    pub avg_us: f64,
    /// Median round-trip latency, µs.
    pub p50_us: f64,
    /// 99th-percentile round-trip latency, µs.
    pub p99_us: f64,
    /// Round-trip bandwidth, decimal GB/s (`2 * size / avg`).
    pub bw_gbps: f64,
}

impl From<&SizeStats> for CsvRow {
    fn from(s: &SizeStats) -> CsvRow {
        CsvRow {
            size: s.size,
            avg_us: s.avg_us,
            p50_us: s.p50_us,
            p99_us: s.p99_us,
            bw_gbps: s.bw_gbps,
        }
    }
}

/// Why a results CSV could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    /// The output directory could not be created: check the path and its permissions.
    #[error("cannot create directory {}: {source}", path.display())]
    CreateDir {
        /// The directory that could not be created.
        path: PathBuf,
        /// The underlying IO error.
        source: io::Error,
    },
    /// The CSV could not be created or written: check free space and permissions.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The underlying IO error.
        source: io::Error,
    },
    /// The CSV could not be opened or read: check that it exists and is readable.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file being read.
        path: PathBuf,
        /// The underlying IO error.
        source: io::Error,
    },
    /// The header lacks a column we need: the file is not a benchmark CSV, or its header
    /// uses other names; fix the header (wanted: size|size_bytes, avg_us, p50_us, p99_us).
    #[error("{}: header has no `{column}` column (wanted {CSV_HEADER}; `size_bytes` may replace `size`, `bw_gbps` is optional)", path.display())]
    MissingColumn {
        /// The file read.
        path: PathBuf,
        /// The column that was not found.
        column: &'static str,
    },
    /// A line could not be parsed: fix or regenerate the file at the line given.
    #[error("{}:{line}: {reason}", path.display())]
    Malformed {
        /// The file read.
        path: PathBuf,
        /// 1-based line number in the file (0 if the CSV parser could not tell).
        line: u64,
        /// What was wrong with the line.
        reason: String,
    },
}

/// The CSV text for `rows`: our header, then one line per row.
///
/// Floats use Rust's `{}` (shortest representation that parses back to the same value), so
/// reading our own file gives back exactly the numbers written.
pub fn to_csv_string(rows: &[CsvRow]) -> String {
    let mut out = String::with_capacity(64 * (rows.len() + 1));
    out.push_str(CSV_HEADER);
    out.push('\n');
    for r in rows {
        // Writing into a String cannot fail.
        let _ = writeln!(out, "{},{},{},{},{}", r.size, r.avg_us, r.p50_us, r.p99_us, r.bw_gbps);
    }
    out
}

/// Writes `rows` to `path` in the original's format, creating parent directories.
///
/// # Errors
///
/// [`CsvError::CreateDir`] if the parent directory cannot be made, [`CsvError::Write`] if the
/// file cannot be created or written.
pub fn write_csv(path: &Path, rows: &[CsvRow]) -> Result<(), CsvError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|source| CsvError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let write_err = |source| CsvError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = fs::File::create(path).map_err(write_err)?;
    file.write_all(to_csv_string(rows).as_bytes()).map_err(write_err)?;
    file.flush().map_err(write_err)
}

/// Column positions found in a header.
struct Columns {
    size: usize,
    avg: usize,
    p50: usize,
    p99: usize,
    bw: Option<usize>,
}

impl Columns {
    fn find(path: &Path, header: &::csv::StringRecord) -> Result<Columns, CsvError> {
        let pos = |name: &str| header.iter().position(|h| h == name);
        let need = |name: &'static str| {
            pos(name).ok_or_else(|| CsvError::MissingColumn {
                path: path.to_path_buf(),
                column: name,
            })
        };
        let size = match pos("size").or_else(|| pos("size_bytes")) {
            Some(i) => i,
            None => {
                return Err(CsvError::MissingColumn {
                    path: path.to_path_buf(),
                    column: "size",
                })
            }
        };
        Ok(Columns {
            size,
            avg: need("avg_us")?,
            p50: need("p50_us")?,
            p99: need("p99_us")?,
            bw: pos("bw_gbps"),
        })
    }
}

/// Reads a results CSV, ours or a peer's, by header name.
///
/// Accepts `size` or `size_bytes` for the size, any column order, extra columns (ignored),
/// CRLF line ends, and a missing or empty `bw_gbps` (then computed as `2 * size / avg`).
/// Rows are returned in file order.
///
/// # Errors
///
/// [`CsvError::Read`] if the file cannot be opened or read, [`CsvError::MissingColumn`] if the
/// header lacks a needed column, [`CsvError::Malformed`] for the first line that does not parse
/// (wrong field count, a size that is not a whole number, a latency that is not a finite
/// non-negative number).
pub fn read_csv(path: &Path) -> Result<Vec<CsvRow>, CsvError> {
    let file = fs::File::open(path).map_err(|source| CsvError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(::csv::Trim::All)
        .from_reader(io::BufReader::new(file));
    let header = reader.headers().map_err(|e| from_csv_error(path, e))?.clone();
    let cols = Columns::find(path, &header)?;

    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| from_csv_error(path, e))?;
        let line = record.position().map_or(0, |p| p.line());
        rows.push(parse_row(&cols, &record).map_err(|reason| CsvError::Malformed {
            path: path.to_path_buf(),
            line,
            reason,
        })?);
    }
    Ok(rows)
}

fn parse_row(cols: &Columns, record: &::csv::StringRecord) -> Result<CsvRow, String> {
    let field = |i: usize| record.get(i).ok_or_else(|| format!("no field {}", i + 1));
    let size_text = field(cols.size)?;
    let size: usize = size_text
        .parse()
        .map_err(|_| format!("size `{size_text}` is not a whole number of bytes"))?;
    let num = |i: usize, name: &str| -> Result<f64, String> {
        let text = field(i)?;
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
            _ => Err(format!("{name} `{text}` is not a finite non-negative number")),
        }
    };
    let avg_us = num(cols.avg, "avg_us")?;
    let p50_us = num(cols.p50, "p50_us")?;
    let p99_us = num(cols.p99, "p99_us")?;
    let bw_gbps = match cols.bw {
        Some(i) if !field(i)?.is_empty() => num(i, "bw_gbps")?,
        _ => bw_gbps(size, avg_us),
    };
    Ok(CsvRow {
        size,
        avg_us,
        p50_us,
        p99_us,
        bw_gbps,
    })
}

fn from_csv_error(path: &Path, e: ::csv::Error) -> CsvError {
    let line = e.position().map_or(0, |p| p.line());
    let reason = e.to_string();
    match e.into_kind() {
        ::csv::ErrorKind::Io(source) => CsvError::Read {
            path: path.to_path_buf(),
            source,
        },
        _ => CsvError::Malformed {
            path: path.to_path_buf(),
            line,
            reason,
        },
    }
}

/// A fresh, empty directory under the system temp dir, unique per call, for tests that write files.
#[cfg(test)]
pub(crate) fn unique_temp_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!(
        "slimebench-{tag}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).expect("create test temp dir");
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFERENCE_DIR: &str = "/work/shared/reference";

    fn reference(name: &str) -> Option<PathBuf> {
        let p = Path::new(REFERENCE_DIR).join(name);
        if p.exists() {
            Some(p)
        } else {
            eprintln!("skipping: {} not found", p.display());
            None
        }
    }

    fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, text).expect("write test file");
        p
    }

    #[test]
    fn write_then_read_round_trips_exactly() {
        let dir = unique_temp_dir("csv-rt");
        let path = dir.join("nested/deeper/slime_rpc.csv");
        let rows = vec![
            CsvRow {
                size: 1024,
                avg_us: 52.21534846350551,
                p50_us: 51.33496597409248,
                p99_us: 71.66399154812098,
                bw_gbps: 0.0392221839030988,
            },
            CsvRow {
                size: 16 * 1024 * 1024,
                avg_us: 4280.0,
                p50_us: 0.1,
                p99_us: 1e-7,
                bw_gbps: 7.838277768092659,
            },
        ];
        write_csv(&path, &rows).expect("write");
        let text = fs::read_to_string(&path).expect("read back");
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(CSV_HEADER));
        assert_eq!(
            lines.next(),
            Some("1024,52.21534846350551,51.33496597409248,71.66399154812098,0.0392221839030988")
        );
        assert_eq!(lines.next(), Some("16777216,4280,0.1,0.0000001,7.838277768092659"));
        assert_eq!(read_csv(&path).expect("parse"), rows);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn from_size_stats() {
        let s = SizeStats::from_samples(
            1000,
            &[std::time::Duration::from_micros(1), std::time::Duration::from_micros(3)],
        );
        let r = CsvRow::from(&s);
        assert_eq!(r.size, 1000);
        assert_eq!(r.avg_us, 2.0);
        assert_eq!(r.p50_us, 3.0);
        assert_eq!(r.p99_us, 3.0);
        assert_eq!(r.bw_gbps, 1.0);
    }

    #[test]
    fn foreign_layouts() {
        let dir = unique_temp_dir("csv-foreign");
        // size_bytes, extra column, different order, CRLF, no bw column, spaces around fields.
        let p = write_file(
            &dir,
            "a.csv",
            "p99_us, iters ,size_bytes,avg_us,p50_us\r\n30, 200 ,1000000,1000,20\r\n",
        );
        let rows = read_csv(&p).expect("parse");
        assert_eq!(
            rows,
            vec![CsvRow {
                size: 1_000_000,
                avg_us: 1000.0,
                p50_us: 20.0,
                p99_us: 30.0,
                bw_gbps: 2.0,
            }]
        );
        // Empty bw field is computed too; blank lines are skipped.
        let p = write_file(&dir, "b.csv", "size,avg_us,p50_us,p99_us,bw_gbps\n\n500,1,1,1,\n");
        assert_eq!(read_csv(&p).expect("parse")[0].bw_gbps, 1.0);
        // Header only: no rows, not an error.
        let p = write_file(&dir, "c.csv", "size,avg_us,p50_us,p99_us,bw_gbps\n");
        assert!(read_csv(&p).expect("parse").is_empty());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn malformed_inputs_are_typed_errors() {
        let dir = unique_temp_dir("csv-bad");
        let cases = [
            ("bad_size.csv", "size,avg_us,p50_us,p99_us\n1024,1,1,1\n1.5k,1,1,1\n", 3),
            ("bad_float.csv", "size,avg_us,p50_us,p99_us\n1024,abc,1,1\n", 2),
            ("neg.csv", "size,avg_us,p50_us,p99_us\n1024,-1,1,1\n", 2),
            ("nan.csv", "size,avg_us,p50_us,p99_us\n1024,NaN,1,1\n", 2),
            ("short.csv", "size,avg_us,p50_us,p99_us\n1024,1,1,1\n2048,1\n", 3),
        ];
        for (name, text, want_line) in cases {
            let p = write_file(&dir, name, text);
            match read_csv(&p) {
                Err(CsvError::Malformed { path, line, reason }) => {
                    assert_eq!(path, p);
                    assert_eq!(line, want_line, "{name}: {reason}");
                    let msg = CsvError::Malformed { path, line, reason }.to_string();
                    assert!(msg.contains(name), "{msg}");
                }
                other => panic!("{name}: expected Malformed, got {other:?}"),
            }
        }

        let p = write_file(&dir, "nohdr.csv", "1024,1,1,1,1\n");
        assert!(matches!(
            read_csv(&p),
            Err(CsvError::MissingColumn { column: "size", .. })
        ));
        let p = write_file(&dir, "nop50.csv", "size,avg_us,p99_us\n1,1,1\n");
        assert!(matches!(
            read_csv(&p),
            Err(CsvError::MissingColumn { column: "p50_us", .. })
        ));
        let p = write_file(&dir, "empty.csv", "");
        assert!(matches!(read_csv(&p), Err(CsvError::MissingColumn { .. })));
        let p = write_file(&dir, "binary.csv", "size,avg_us,p50_us,p99_us\n\u{0}\u{1},\u{7f}\n");
        assert!(read_csv(&p).is_err());
        assert!(matches!(
            read_csv(&dir.join("does-not-exist.csv")),
            Err(CsvError::Read { .. })
        ));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn invalid_utf8_is_an_error_not_a_panic() {
        let dir = unique_temp_dir("csv-utf8");
        let p = dir.join("x.csv");
        fs::write(&p, b"size,avg_us,p50_us,p99_us\n1024,\xff\xfe,1,1\n").expect("write");
        assert!(matches!(read_csv(&p), Err(CsvError::Malformed { line: 2, .. })));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn published_slime_csv() {
        let Some(p) = reference("dlslime_slime_rpc_published.csv") else {
            return;
        };
        let rows = read_csv(&p).expect("parse published slime csv");
        assert_eq!(rows.len(), 8);
        assert_eq!(rows[0].size, 1024);
        assert_eq!(rows[0].avg_us, 52.21534846350551);
        assert_eq!(rows[7].size, 16 * 1024 * 1024);
        // Our bandwidth formula agrees with the original's column.
        for r in &rows {
            assert!((bw_gbps(r.size, r.avg_us) - r.bw_gbps).abs() < 1e-9 * r.bw_gbps.max(1.0));
        }
    }

    #[test]
    fn published_ray_csv() {
        let Some(p) = reference("dlslime_ray_rpc_published.csv") else {
            return;
        };
        let rows = read_csv(&p).expect("parse published ray csv");
        assert_eq!(rows.len(), 9);
        assert_eq!(rows[0].avg_us, 321.0414529312402);
        assert_eq!(rows[8].size, 64 * 1024 * 1024);
    }

    #[test]
    fn ray_this_machine_csv() {
        let Some(p) = reference("ray_rpc_this_machine.csv") else {
            return;
        };
        // size_bytes, an iters column, CRLF line ends.
        let rows = read_csv(&p).expect("parse ray csv from this machine");
        assert_eq!(rows.len(), 15);
        assert_eq!(rows[0].size, 1024);
        assert_eq!(rows[0].avg_us, 891.47);
        assert_eq!(rows[0].bw_gbps, 0.0023);
        assert_eq!(rows[14].size, 16 * 1024 * 1024);
        assert_eq!(rows[14].p50_us, 14595.87);
    }
}
