//! Frames in, container bytes out: MP4 with the moov at the front (plays
//! while downloading), fragmented MP4 (CMAF: init segment + fragments),
//! MPEG-TS.
