// The search box takes a word that starts with "-" as "without this word",
// so typing a flag such as --keep-alive would find nothing at all. On these
// pages a leading dash means a command-line flag: drop the dashes that start
// a word of the query before it reaches the search worker, and the flag is
// found as the words it is made of ("keep alive"). Material sends queries as
// {type: 2, data: "the query"} (2 is its QUERY message type).
(function () {
  var QUERY = 2;
  var post = Worker.prototype.postMessage;
  Worker.prototype.postMessage = function (message) {
    if (message && message.type === QUERY && typeof message.data === "string") {
      message = {type: message.type, data: message.data.replace(/(^|\s)-+(?=[^\s-])/g, "$1")};
    }
    return post.apply(this, [message].concat(Array.prototype.slice.call(arguments, 1)));
  };
})();
