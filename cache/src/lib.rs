//! streamcache-cache (being written).
