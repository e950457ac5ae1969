//! sporectl: the command-line client of spored
