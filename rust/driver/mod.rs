//! Running the forward on the event loop's own thread.
//!
//! The asyncio loop that serves a request also drives its forward: the cell sockets live in a mio
//! poll whose descriptor the loop watches, and the futures that use them run on a small executor
//! polled from the loop's callbacks. A request therefore never changes threads between granian
//! handing it to Python and Python answering it.

pub mod executor;
pub mod reactor;
pub mod stream;
pub mod timer;
