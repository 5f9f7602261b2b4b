// Hover hints of the Differential Diffusion panel's controls. The texts come from the settings
// table (the panel writes them, as JSON, into a hidden element); the page gets them as `title`,
// the way the WebUI gives its own controls their hints. Applied again on every UI update: gradio 4
// renders a control only once it is shown.
(function () {
    "use strict";
    let hints = null;

    function readHints() {
        if (hints) return hints;
        const holder = document.querySelector("#differential_diffusion_hints [data-hints]");
        if (!holder) return null;
        try {
            hints = JSON.parse(holder.dataset.hints);
        } catch (error) {
            hints = {};
        }
        return hints;
    }

    function applyHints() {
        const known = readHints();
        if (!known) return;
        for (const [id, text] of Object.entries(known)) {
            const element = document.getElementById(id);
            if (element && element.title !== text) element.title = text;
        }
    }

    if (typeof onUiUpdate === "function") onUiUpdate(applyHints);
    if (typeof onUiLoaded === "function") onUiLoaded(applyHints);
})();
