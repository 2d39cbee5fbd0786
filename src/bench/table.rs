//! The merged comparison table: every system's CSV side by side, in the original's layout.
//!
//! The original prints Slime avg/p99/BW, then each peer, then `S/Ray = Ray avg / ours avg`;
//! we keep that and add Pulsing, actix and the floor (plain TCP, the harness's own overhead)
//! when their CSVs are present. Plain monospace text, so it reads the same in a terminal, a log
//! or a results README.

use std::path::{Path, PathBuf};

use super::csv::{read_csv, CsvRow};
use super::plan::human_size;

/// A system whose results CSV the table knows about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum System {
    /// This harness's mailbox RPC ("ours").
    Slime,
    /// Pulsing, the original's optional peer.
    Pulsing,
    /// Ray actors, the original's main peer.
    Ray,
    /// A plain actix actor echo, the framework baseline.
    Actix,
    /// Blocking TCP ping-pong between two threads: the floor under everything else.
    Floor,
    /// Two aligned memcpys per round trip in one process: the floor of any
    /// transport on one host (what shared memory can approach).
    Memcpy,
}

impl System {
    /// Every system, in table order.
    pub const ALL: [System; 6] = [
        System::Slime,
        System::Pulsing,
        System::Ray,
        System::Actix,
        System::Floor,
        System::Memcpy,
    ];

    /// The CSV file this system's results live in, inside the results directory.
    pub fn file_name(&self) -> &'static str {
        match self {
            System::Slime => "slime_rpc.csv",
            System::Pulsing => "pulsing_rpc.csv",
            System::Ray => "ray_rpc.csv",
            System::Actix => "actix_rpc.csv",
            System::Floor => "floor_rpc.csv",
            System::Memcpy => "memcpy_rpc.csv",
        }
    }

    /// The name used in column headers.
    pub fn label(&self) -> &'static str {
        match self {
            System::Slime => "Slime",
            System::Pulsing => "Pulsing",
            System::Ray => "Ray",
            System::Actix => "actix",
            System::Floor => "Floor",
            System::Memcpy => "memcpy",
        }
    }
}

/// The results that were found, and the ones that should have been but could not be used.
#[derive(Clone, Debug, Default)]
pub struct Comparison {
    /// Each loaded system with its rows, in file order.
    pub systems: Vec<(System, Vec<CsvRow>)>,
    /// Systems left out, with the reason (shown as notes under the table).
    pub missing: Vec<(System, String)>,
}

impl Comparison {
    /// The rows of `system`, if it was loaded.
    pub fn rows(&self, system: System) -> Option<&[CsvRow]> {
        self.systems
            .iter()
            .find(|(s, _)| *s == system)
            .map(|(_, rows)| rows.as_slice())
    }
}

/// Why the results directory could not be turned into a comparison.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The results directory could not be listed: check the path passed and its permissions.
    #[error("cannot read results directory {}: {source}", dir.display())]
    ReadDir {
        /// The directory given.
        dir: PathBuf,
        /// The underlying IO error.
        source: std::io::Error,
    },
    /// None of the known CSVs is in the directory: run a benchmark into it first, or point at
    /// the directory that holds the CSVs.
    #[error("no result CSV in {}: expected one or more of {}", dir.display(), expected_files())]
    NoCsv {
        /// The directory searched.
        dir: PathBuf,
    },
}

fn expected_files() -> String {
    System::ALL.iter().map(System::file_name).collect::<Vec<_>>().join(", ")
}

/// Loads whichever of the systems' CSVs are in `dir`.
///
/// Peers that did not run are simply absent; only our own missing CSV is noted, since a table
/// without "ours" is probably a mistake. A CSV that exists but cannot be read or parsed is
/// noted with the reason rather than failing the whole table.
///
/// # Errors
///
/// [`TableError::ReadDir`] if `dir` cannot be listed, [`TableError::NoCsv`] if none of the
/// five file names exists in it.
pub fn load_dir(dir: &Path) -> Result<Comparison, TableError> {
    std::fs::read_dir(dir).map_err(|source| TableError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut c = Comparison::default();
    let mut found_any = false;
    for system in System::ALL {
        let path = dir.join(system.file_name());
        match path.try_exists() {
            Ok(true) => {
                found_any = true;
                match read_csv(&path) {
                    Ok(rows) => c.systems.push((system, rows)),
                    Err(e) => c.missing.push((system, e.to_string())),
                }
            }
            Ok(false) => {
                if system == System::Slime {
                    c.missing.push((system, "not found".to_string()));
                }
            }
            Err(e) => {
                found_any = true;
                c.missing.push((system, format!("cannot check for file: {e}")));
            }
        }
    }
    if !found_any {
        return Err(TableError::NoCsv { dir: dir.to_path_buf() });
    }
    Ok(c)
}

/// One column of the table: header and one cell per size row.
struct Column {
    header: String,
    cells: Vec<String>,
    left_aligned: bool,
}

fn first_row(rows: Option<&[CsvRow]>, size: usize) -> Option<&CsvRow> {
    rows?.iter().find(|r| r.size == size)
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

/// `num / den` as `6.15x`, or `-` when either side is absent or the denominator is not positive.
fn fmt_ratio(num: Option<f64>, den: Option<f64>) -> String {
    match (num, den) {
        (Some(n), Some(d)) if d > 0.0 && n.is_finite() => format!("{:.2}x", n / d),
        _ => "-".to_string(),
    }
}

/// Renders the comparison as aligned plain text: header, separator, one line per size, notes.
///
/// Rows are the sizes in our CSV (or, without ours, every size any system has), ascending.
/// Ratios are peer avg / ours avg, so above 1 means ours is faster; against the floor they are
/// ours / floor (p50 and bandwidth), i.e. how far the harness is from plain TCP.
pub fn render(c: &Comparison) -> String {
    let ours = c.rows(System::Slime);
    let mut sizes: Vec<usize> = match ours {
        Some(rows) => rows.iter().map(|r| r.size).collect(),
        None => c
            .systems
            .iter()
            .flat_map(|(_, rows)| rows.iter().map(|r| r.size))
            .collect(),
    };
    sizes.sort_unstable();
    sizes.dedup();

    let mut columns = vec![Column {
        header: "Size".to_string(),
        cells: sizes.iter().map(|&s| human_size(s)).collect(),
        left_aligned: true,
    }];
    let mut push = |header: String, cell: &dyn Fn(usize) -> String| {
        columns.push(Column {
            header,
            cells: sizes.iter().map(|&s| cell(s)).collect(),
            left_aligned: false,
        });
    };
    let field = |system: System, size: usize, f: fn(&CsvRow) -> f64| first_row(c.rows(system), size).map(f);
    let avg = |r: &CsvRow| r.avg_us;
    let p50 = |r: &CsvRow| r.p50_us;
    let p99 = |r: &CsvRow| r.p99_us;
    let bw = |r: &CsvRow| r.bw_gbps;

    push("Slime avg(us)".into(), &|s| fmt_opt(field(System::Slime, s, avg), 1));
    push("Slime p99(us)".into(), &|s| fmt_opt(field(System::Slime, s, p99), 1));
    push("Slime BW(GB/s)".into(), &|s| fmt_opt(field(System::Slime, s, bw), 3));

    let has = |system: System| c.rows(system).is_some();
    for peer in [System::Pulsing, System::Ray] {
        if has(peer) {
            let l = peer.label();
            push(format!("{l} avg"), &|s| fmt_opt(field(peer, s, avg), 1));
            push(format!("{l} p99"), &|s| fmt_opt(field(peer, s, p99), 1));
            push(format!("{l} BW"), &|s| fmt_opt(field(peer, s, bw), 3));
        }
    }
    if has(System::Actix) {
        push("actix avg".into(), &|s| fmt_opt(field(System::Actix, s, avg), 1));
    }
    if has(System::Floor) {
        push("Floor avg".into(), &|s| fmt_opt(field(System::Floor, s, avg), 1));
        push("Floor p50".into(), &|s| fmt_opt(field(System::Floor, s, p50), 1));
        push("Floor BW".into(), &|s| fmt_opt(field(System::Floor, s, bw), 3));
    }
    if has(System::Memcpy) {
        push("memcpy p50".into(), &|s| fmt_opt(field(System::Memcpy, s, p50), 1));
        push("memcpy BW".into(), &|s| fmt_opt(field(System::Memcpy, s, bw), 3));
    }
    for (peer, header) in [
        (System::Pulsing, "S/Pul"),
        (System::Ray, "S/Ray"),
        (System::Actix, "S/actix"),
    ] {
        if has(peer) {
            push(header.into(), &|s| {
                fmt_ratio(field(peer, s, avg), field(System::Slime, s, avg))
            });
        }
    }
    if has(System::Floor) {
        push("p50 S/Floor".into(), &|s| {
            fmt_ratio(field(System::Slime, s, p50), field(System::Floor, s, p50))
        });
        push("BW S/Floor".into(), &|s| {
            fmt_ratio(field(System::Slime, s, bw), field(System::Floor, s, bw))
        });
    }
    if has(System::Memcpy) {
        push("BW S/memcpy".into(), &|s| {
            fmt_ratio(field(System::Slime, s, bw), field(System::Memcpy, s, bw))
        });
    }

    let mut out = String::new();
    let widths: Vec<usize> = columns
        .iter()
        .map(|col| {
            col.cells
                .iter()
                .map(|c| c.chars().count())
                .chain([col.header.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &mut dyn Iterator<Item = (&Column, &str)>| {
        let parts: Vec<String> = cells
            .zip(&widths)
            .map(|((col, text), &w)| {
                if col.left_aligned {
                    format!("{text:<w$}")
                } else {
                    format!("{text:>w$}")
                }
            })
            .collect();
        let mut l = parts.join("  ");
        l.truncate(l.trim_end().len());
        l.push('\n');
        l
    };
    out.push_str(&line(&mut columns.iter().map(|col| (col, col.header.as_str()))));
    let dashes: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    out.push_str(&dashes.join("  "));
    out.push('\n');
    for i in 0..sizes.len() {
        out.push_str(&line(&mut columns.iter().map(|col| (col, col.cells[i].as_str()))));
    }
    for (system, reason) in &c.missing {
        out.push_str(&format!("note: {}: {reason}\n", system.file_name()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::csv::{unique_temp_dir, write_csv};
    use crate::bench::plan::{KIB, MIB};

    fn row(size: usize, avg_us: f64, p50_us: f64, p99_us: f64, bw_gbps: f64) -> CsvRow {
        CsvRow {
            size,
            avg_us,
            p50_us,
            p99_us,
            bw_gbps,
        }
    }

    fn header(text: &str) -> Vec<&str> {
        let first = text.lines().next().unwrap_or("");
        // Headers contain single spaces; columns are separated by two or more.
        first.split("  ").map(str::trim).filter(|h| !h.is_empty()).collect()
    }

    fn line_for<'a>(text: &'a str, label: &str) -> &'a str {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(label))
            .unwrap_or_else(|| panic!("no line for {label} in\n{text}"))
    }

    #[test]
    fn system_names() {
        let files: Vec<&str> = System::ALL.iter().map(System::file_name).collect();
        assert_eq!(
            files,
            [
                "slime_rpc.csv",
                "pulsing_rpc.csv",
                "ray_rpc.csv",
                "actix_rpc.csv",
                "floor_rpc.csv",
                "memcpy_rpc.csv"
            ]
        );
        assert_eq!(System::Actix.label(), "actix");
        assert_eq!(System::Slime.label(), "Slime");
    }

    #[test]
    fn ours_and_ray() {
        let c = Comparison {
            systems: vec![
                (
                    System::Slime,
                    vec![row(KIB, 50.0, 49.0, 70.0, 0.04), row(MIB, 400.0, 390.0, 500.0, 5.2)],
                ),
                (
                    System::Ray,
                    vec![
                        row(KIB, 300.0, 290.0, 480.0, 0.0068),
                        row(MIB, 1000.0, 950.0, 2000.0, 2.1),
                    ],
                ),
            ],
            missing: vec![],
        };
        let t = render(&c);
        assert_eq!(
            header(&t),
            [
                "Size",
                "Slime avg(us)",
                "Slime p99(us)",
                "Slime BW(GB/s)",
                "Ray avg",
                "Ray p99",
                "Ray BW",
                "S/Ray"
            ]
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[1].chars().all(|ch| ch == '-' || ch == ' '));
        assert_eq!(
            line_for(&t, "1KB").split_whitespace().collect::<Vec<_>>(),
            ["1KB", "50.0", "70.0", "0.040", "300.0", "480.0", "0.007", "6.00x"]
        );
        assert!(line_for(&t, "1MB").ends_with("2.50x"));
        // Every line of the table has the same width: columns are aligned.
        let width = lines[0].len();
        assert!(lines[1..].iter().all(|l| l.len() == width), "{t}");
    }

    #[test]
    fn all_five_and_missing_sizes() {
        let sizes = [KIB, 4 * KIB];
        let mk = |avg: f64| sizes.iter().map(|&s| row(s, avg, avg, avg * 2.0, 1.0)).collect();
        let c = Comparison {
            systems: vec![
                (System::Slime, mk(10.0)),
                // Pulsing only has the first size.
                (System::Pulsing, vec![row(KIB, 40.0, 40.0, 80.0, 0.5)]),
                (System::Ray, mk(100.0)),
                (System::Actix, mk(20.0)),
                (
                    System::Floor,
                    vec![row(KIB, 5.0, 4.0, 9.0, 2.0), row(4 * KIB, 5.0, 5.0, 9.0, 0.5)],
                ),
            ],
            missing: vec![(System::Pulsing, "bad things".into())],
        };
        let t = render(&c);
        assert_eq!(
            header(&t),
            [
                "Size",
                "Slime avg(us)",
                "Slime p99(us)",
                "Slime BW(GB/s)",
                "Pulsing avg",
                "Pulsing p99",
                "Pulsing BW",
                "Ray avg",
                "Ray p99",
                "Ray BW",
                "actix avg",
                "Floor avg",
                "Floor p50",
                "Floor BW",
                "S/Pul",
                "S/Ray",
                "S/actix",
                "p50 S/Floor",
                "BW S/Floor"
            ]
        );
        let one: Vec<&str> = line_for(&t, "1KB").split_whitespace().collect();
        assert_eq!(one.len(), 19);
        assert_eq!(one[14..], ["4.00x", "10.00x", "2.00x", "2.50x", "0.50x"]);
        let four: Vec<&str> = line_for(&t, "4KB").split_whitespace().collect();
        assert_eq!(four.len(), 19);
        assert_eq!(four[4..7], ["-", "-", "-"]);
        assert_eq!(four[14], "-");
        assert_eq!(four[17..], ["2.00x", "2.00x"]);
        assert!(t.ends_with("note: pulsing_rpc.csv: bad things\n"), "{t}");
    }

    #[test]
    fn without_ours_rows_are_the_union() {
        let c = Comparison {
            systems: vec![
                (System::Ray, vec![row(4 * KIB, 1.0, 1.0, 1.0, 1.0)]),
                (System::Floor, vec![row(KIB, 1.0, 1.0, 1.0, 1.0)]),
            ],
            missing: vec![(System::Slime, "not found".into())],
        };
        let t = render(&c);
        let labels: Vec<&str> = t.lines().skip(2).filter_map(|l| l.split_whitespace().next()).collect();
        assert_eq!(labels, ["1KB", "4KB", "note:"]);
        assert_eq!(line_for(&t, "1KB").split_whitespace().nth(1), Some("-"));
        assert!(t.contains("note: slime_rpc.csv: not found"));
    }

    #[test]
    fn load_dir_cases() {
        let dir = unique_temp_dir("table-load");
        // Nothing there yet: a clear error naming the files.
        let err = load_dir(&dir).expect_err("empty dir");
        assert!(matches!(err, TableError::NoCsv { .. }));
        assert!(err.to_string().contains("slime_rpc.csv"));
        assert!(matches!(load_dir(&dir.join("nope")), Err(TableError::ReadDir { .. })));

        write_csv(&dir.join("ray_rpc.csv"), &[row(KIB, 300.0, 290.0, 400.0, 0.007)]).expect("write");
        std::fs::write(dir.join("floor_rpc.csv"), "size,avg_us\n1,zzz\n").expect("write");
        let c = load_dir(&dir).expect("load");
        assert_eq!(c.systems.len(), 1);
        assert_eq!(c.systems[0].0, System::Ray);
        let missing: Vec<System> = c.missing.iter().map(|(s, _)| *s).collect();
        assert_eq!(missing, [System::Slime, System::Floor]);
        let t = render(&c);
        assert!(t.contains("note: slime_rpc.csv: not found"), "{t}");
        assert!(t.contains("note: floor_rpc.csv: "), "{t}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn published_slime_vs_ray() {
        let reference = Path::new("/work/shared/reference");
        let slime = reference.join("dlslime_slime_rpc_published.csv");
        let ray = reference.join("dlslime_ray_rpc_published.csv");
        if !slime.exists() || !ray.exists() {
            eprintln!("skipping: published CSVs not found in {}", reference.display());
            return;
        }
        let dir = unique_temp_dir("table-published");
        std::fs::copy(&slime, dir.join("slime_rpc.csv")).expect("copy");
        std::fs::copy(&ray, dir.join("ray_rpc.csv")).expect("copy");
        let c = load_dir(&dir).expect("load");
        assert!(c.missing.is_empty(), "{:?}", c.missing);
        let t = render(&c);
        // 321.04 / 52.22
        assert!(line_for(&t, "1KB").ends_with("6.15x"), "{t}");
        assert!(t.contains("6.15x"));
        // 8063.03 / 4280.84; Ray's extra 64MB row is not in ours, so it is not shown.
        assert!(line_for(&t, "16MB").ends_with("1.88x"), "{t}");
        assert!(!t.contains("64MB"));
        assert_eq!(t.lines().count(), 2 + 8);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn ray_from_this_machine_has_foreign_sizes() {
        let ray = Path::new("/work/shared/reference/ray_rpc_this_machine.csv");
        if !ray.exists() {
            eprintln!("skipping: {} not found", ray.display());
            return;
        }
        let rows = read_csv(ray).expect("parse");
        let c = Comparison {
            systems: vec![
                (
                    System::Slime,
                    vec![row(KIB, 89.147, 80.0, 100.0, 0.02), row(2 * MIB, 1.0, 1.0, 1.0, 1.0)],
                ),
                (System::Ray, rows),
            ],
            missing: vec![],
        };
        let t = render(&c);
        assert!(line_for(&t, "1KB").ends_with("10.00x"), "{t}");
        assert!(line_for(&t, "2MB").contains("6777.8"), "{t}");
    }
}
