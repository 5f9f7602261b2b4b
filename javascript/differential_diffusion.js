// Differential Diffusion: hover hints for the panel's controls, in the WebUI's own way
// (its hints.js reads the global `titles` table by label text).
(function() {
    const differentialDiffusionTitles = {
        "Change map (white = change, black = keep)": "Grayscale map: each pixel changes like img2img at (map value x denoising strength). It gets the same resize/crop as the init image.",
        "Map source": "Use the uploaded map, or the inpaint mask (after its blur) as the change amounts: soft inpainting.",
        "Invert map (white = keep)": "Flip the map: white keeps the input, black changes fully (the paper's own maps are drawn this way).",
        "Gamma": "map ** gamma: above 1 weakens mid-grays, below 1 strengthens them.",
        "Blur radius (px)": "Gaussian blur of the map, standard deviation in output pixels: softer transitions.",
        "Strength at black": "Strength given to black: strength = low + (high - low) x map.",
        "Strength at white": "Strength given to white: strength = low + (high - low) x map.",
        "Preserve unchanged pixels": "Where the strength is 0, output the input pixels exactly instead of a VAE round trip.",
    };
    if (typeof titles === "object" && titles !== null) {
        Object.assign(titles, differentialDiffusionTitles);
    }
})();
