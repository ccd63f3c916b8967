//! The campaign worker: the I/O half of campaigns (see the module docs of [`super`]).
