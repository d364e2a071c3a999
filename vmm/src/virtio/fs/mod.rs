//! virtio-fs (virtio 1.2, 5.11) served by virtiofsd over vhost-user.
mod device;
pub use device::{fs_config, TagError, FS_QUEUE_SIZE, FS_REQUEST_QUEUES, FS_TAG_MAX};
