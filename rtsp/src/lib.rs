//! streamcache-rtsp (being written).
