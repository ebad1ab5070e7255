//! Small JSON files that carry their format and a checksum of their contents: the auth
//! files and `drills.json`.
//!
//! ```text
//! {"format": "<kind and version>", "data": {...}, "xxh3": "<16 hex of the compact JSON of data>"}
//! ```
//!
//! The checksum is over `data` serialised compactly, so the file itself may be laid out
//! any way (it is written indented, for people who read it).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Error, Result};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<D> {
    format: String,
    data: D,
    xxh3: String,
}

/// The bytes of a file holding `data` as `format`, ending in a newline.
pub fn seal<T: Serialize>(format: &str, data: &T) -> Result<Vec<u8>> {
    let json_error = |e: serde_json::Error| Error::Invalid(format!("serialise {format}: {e}"));
    let compact = serde_json::to_vec(data).map_err(json_error)?;
    let envelope = Envelope { format: format.to_string(), data, xxh3: format!("{:016x}", xxh3_64(&compact)) };
    let mut bytes = serde_json::to_vec_pretty(&envelope).map_err(json_error)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// The data of a file [`seal`] wrote as `format`, or why the bytes are not that: not such
/// a file, another format, or contents that do not match their checksum.
pub fn unseal<T: Serialize + DeserializeOwned>(format: &str, bytes: &[u8]) -> std::result::Result<T, String> {
    let envelope: Envelope<T> = serde_json::from_slice(bytes).map_err(|e| format!("not a valid file: {e}"))?;
    if envelope.format != format {
        return Err(format!("format \"{}\", expected \"{format}\"", envelope.format.escape_default()));
    }
    let compact = serde_json::to_vec(&envelope.data).map_err(|e| format!("re-serialise: {e}"))?;
    let computed = format!("{:016x}", xxh3_64(&compact));
    if computed != envelope.xxh3 {
        return Err(format!(
            "xxh3 checksum {} does not match the contents ({computed})",
            envelope.xxh3.escape_default()
        ));
    }
    Ok(envelope.data)
}
