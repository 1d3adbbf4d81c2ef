// Copy buttons: <button class="copy" data-copy="#selector">, and grace countdowns:
// <span class="countdown" data-until="RFC 3339">. Everything else works without JavaScript.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  const field = document.querySelector(button.dataset.copy);
  if (!field) return;
  field.select();
  try {
    await navigator.clipboard.writeText(field.value);
  } catch {
    document.execCommand("copy");
  }
  const label = button.textContent;
  button.textContent = "Copied";
  setTimeout(() => { button.textContent = label; }, 2000);
});

// The server renders the time left; this keeps it moving while the page is open.
function formatRemaining(seconds) {
  const days = Math.floor(seconds / 86400), hours = Math.floor(seconds % 86400 / 3600), minutes = Math.floor(seconds % 3600 / 60);
  if (days > 0) return `${days} d ${hours} h`;
  if (hours > 0) return `${hours} h ${minutes} min`;
  if (minutes > 0) return `${minutes} min ${seconds % 60} s`;
  return `${seconds} s`;
}
const countdowns = document.querySelectorAll(".countdown[data-until]");
if (countdowns.length > 0) {
  setInterval(() => {
    for (const element of countdowns) {
      const seconds = Math.max(0, Math.ceil((Date.parse(element.dataset.until) - Date.now()) / 1000));
      element.textContent = seconds > 0 ? formatRemaining(seconds) : "no time: it is refused now";
    }
  }, 1000);
}
