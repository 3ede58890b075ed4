//! Classifying failures that are the machine's, not the input's: a full disk (or quota), a
//! busy index, a path that is not a regular file, and a home on a network filesystem. A full disk must stop every command with the OS error and a hint, never make it
//! retry; a busy index is worth a bounded retry.

use std::error::Error;

const OUT_OF_SPACE: &[&str] = &[
    "No space left on device",
    "Disk quota exceeded",
    "database or disk is full",
    "File too large",
];

/// True when any error in the chain says the filesystem is full (ENOSPC, EDQUOT, EFBIG,
/// SQLITE_FULL), whether as a typed I/O error or only in its message (many errors carry the
/// OS error as text).
pub fn out_of_space(err: &(dyn Error + 'static)) -> bool {
    let mut cur: Option<&(dyn Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.raw_os_error(),
                Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG)
            )
        {
            return true;
        }
        let text = e.to_string();
        if OUT_OF_SPACE.iter().any(|m| text.contains(m)) {
            return true;
        }
        cur = e.source();
    }
    false
}

/// True for an index error another process's transaction causes (worth retrying).
pub fn transient(err: &(dyn Error + 'static)) -> bool {
    let mut cur: Option<&(dyn Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        if text.contains("database is locked") || text.contains("database is busy") {
            return true;
        }
        if crate::index::is_pool_timeout(e) || crate::index::is_contention(e) {
            return true;
        }
        cur = e.source();
    }
    false
}

/// Filesystem magic numbers (`statfs` f_type) of network and cluster filesystems.
const NETWORK_FILESYSTEMS: &[(i64, &str)] = &[
    (0x6969, "NFS"),
    (0xFF53_4D42, "SMB"),
    (0x517B, "SMB"),
    (0xFE53_4D42, "SMB2"),
    (0x0BD0_0BD0, "Lustre"),
    (0x4750_4653, "GPFS"),
    (0x6573_5546, "FUSE"),
    (0x00C3_6400, "CephFS"),
];

/// The network filesystem `path` is on ("NFS", "Lustre", …), or `None` for a local one (or
/// when it cannot be told).
pub fn network_filesystem(path: &std::path::Path) -> Option<&'static str> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: a valid NUL-terminated path and a zeroed statfs the call fills in.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let kind = st.f_type as i64 & 0xFFFF_FFFF;
    NETWORK_FILESYSTEMS
        .iter()
        .find(|(magic, _)| *magic == kind)
        .map(|(_, name)| *name)
}

/// What a path is when it is not a regular file: "a directory", "a FIFO", … (`None` for a
/// regular file, a link to one, or a missing path). Readers call it first, so that a FIFO is
/// never opened (it would block) and a directory is named as such.
pub fn file_kind(path: &std::path::Path) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let t = std::fs::metadata(path).ok()?.file_type();
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_socket() {
        Some("a socket")
    } else if t.is_block_device() || t.is_char_device() {
        Some("a device")
    } else {
        Some("not a regular file")
    }
}

/// The hint for a full disk.
pub fn out_of_space_hint(home: &std::path::Path) -> String {
    format!(
        "the filesystem is full: free space where `{}` lives (see `df -h {}`), then run the \
         command again; finished work is kept and interrupted runs resume",
        home.display(),
        home.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_folder_is_not_a_network_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(network_filesystem(dir.path()), None);
        assert_eq!(
            network_filesystem(std::path::Path::new("/no/such/path")),
            None
        );
    }

    #[test]
    fn full_disks_are_recognised_typed_or_as_text() {
        let io = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(out_of_space(&io));
        let wrapped = anyhow::Error::from(io).context("could not write `x`");
        assert!(out_of_space(wrapped.as_ref()));
        let text = std::io::Error::other("write ckpt: No space left on device (os error 28)");
        assert!(out_of_space(&text));
        assert!(!out_of_space(&std::io::Error::other("permission denied")));
        assert!(transient(&std::io::Error::other("database is locked")));
    }
}
