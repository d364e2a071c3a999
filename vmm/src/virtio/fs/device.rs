//! virtio-fs device configuration: the tag the guest mounts and the number
//! of request queues (5.11.4). The queues themselves (one high-priority
//! queue plus the request queues) are served by virtiofsd.

/// Longest tag, in bytes (the field is 36 bytes, NUL padded).
pub const FS_TAG_MAX: usize = 36;
/// Request queues RayOS sets up (plus one high-priority queue).
pub const FS_REQUEST_QUEUES: u32 = 1;
/// Size of each queue.
pub const FS_QUEUE_SIZE: u16 = 1024;

/// Why a virtio-fs tag cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("tag {0:?} must be 1 to {FS_TAG_MAX} bytes")]
    Length(String),
    #[error("tag {0:?} must be printable ASCII without spaces")]
    Characters(String),
}

/// The device configuration image for `tag`.
pub fn fs_config(tag: &str) -> Result<Vec<u8>, TagError> {
    if tag.is_empty() || tag.len() > FS_TAG_MAX {
        return Err(TagError::Length(tag.into()));
    }
    if tag.bytes().any(|b| b == 0 || !b.is_ascii_graphic()) {
        return Err(TagError::Characters(tag.into()));
    }
    let mut c = vec![0u8; FS_TAG_MAX + 4];
    c[..tag.len()].copy_from_slice(tag.as_bytes());
    c[FS_TAG_MAX..].copy_from_slice(&FS_REQUEST_QUEUES.to_le_bytes());
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_layout() {
        let c = fs_config("rayos").unwrap();
        assert_eq!(c.len(), 40);
        assert_eq!(&c[..6], b"rayos\0");
        assert_eq!(u32::from_le_bytes(c[36..40].try_into().unwrap()), 1);
    }

    #[test]
    fn bad_tags() {
        assert!(fs_config("").is_err());
        assert!(fs_config(&"x".repeat(37)).is_err());
        assert!(fs_config("a b").is_err());
        assert!(fs_config(&"x".repeat(36)).is_ok());
    }
}
