// Campaigns: the list, one campaign live, the create form with the CSV upload and the preview.
export const routes = [];
