//! (being written: starts a private redis-server for tests)
