//! Writing pages onto a database file: apply = write each page at `(pgno-1) * PageSize`,
//! then set the file length to `Commit * PageSize` (which drops pages above Commit, and
//! zero-fills when the database grows past pages nobody wrote, such as the lock page).

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::merge::PageSource;
use crate::error::{Error, Result};

/// Writes every page of `source` onto `db` and sets its length to the source's Commit.
/// Does not sync: the caller decides when the result must be durable.
pub fn apply_pages(db: &File, source: &mut impl PageSource, page_size: u32) -> Result<()> {
    while source.advance()? {
        let Some(page) = source.page() else { break };
        db.write_all_at(page.data, page.pgno.file_offset(page_size))
            .map_err(|e| Error::io(format!("write page {}", page.pgno), e))?;
    }
    db.set_len(u64::from(source.commit()) * u64::from(page_size)).map_err(|e| Error::io("set database length", e))?;
    Ok(())
}
