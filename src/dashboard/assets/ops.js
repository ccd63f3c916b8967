// Operations: trunks, the tenant's limits, keys, webhooks and their deliveries.
export const routes = [];
