// (filled in by the pages)
