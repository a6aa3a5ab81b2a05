//! Data the server can load for people trying it out, built through the
//! services like any client's data; no rule lives here.

pub mod demo;
