//! The binary's own commands, apart from the server library: clients of a
//! running server (`loadgen`, `health`, `monitor`, `report`, `backup`) and
//! plugin authors' tools (`plugin new/build/check/test`), and `geo update`
//! (the country database). Only this side
//! uses `clap` and `reqwest`; the library builds without them (`cli`
//! feature off).

pub mod admin_client;
pub mod geo;
pub mod loadgen;
pub mod npm_pack;
pub mod plugin;
pub mod scaffold;
