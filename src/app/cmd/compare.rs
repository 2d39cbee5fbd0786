//! `slimebench compare DIR`: the merged table of a folder of CSVs.

use std::path::Path;

use crate::app::AppError;
use crate::bench::table;

/// The merged comparison table of the CSVs in `dir`.
///
/// # Errors
/// [`AppError::Compare`] when the directory has no readable CSV.
pub fn compare(dir: &Path) -> Result<String, AppError> {
    let c = table::load_dir(dir)?;
    Ok(table::render(&c))
}
