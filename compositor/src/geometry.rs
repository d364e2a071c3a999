//! Integer rectangles in output (logical pixel) coordinates: the types live
//! in `rayos-compositor-ipc` (they are part of the control protocol) and are
//! re-exported here for the shell core.

pub use rayos_compositor_ipc::geometry::*;
