console.log("cassette");
