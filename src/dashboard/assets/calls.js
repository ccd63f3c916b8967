// Calls: the searchable list, and one call on one time axis with its recording player.
export const routes = [];
