/** Text made safe to put in HTML, in an element or a quoted attribute. */
export const escapeHtml = (value: unknown): string => String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
